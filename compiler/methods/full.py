"""kind = "full": every weight of the model is trained."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, MethodPlan, ResolveContext
from ftc.compiler.schema import SpecModel


class Full(SpecModel):
    kind: Literal["full"] = Field(description="Update every weight of the model.")


class FullPlan(MethodPlan):
    kind: Literal["full"]


def _resolve(method: Full, ctx: ResolveContext) -> FullPlan:
    total = ctx.info.total_params
    return FullPlan(kind="full", adapter="none", trainable_params=total, total_params=total)


FULL = MethodDef(
    kind="full",
    spec=Full,
    plan=FullPlan,
    template="sft.py.j2",
    trains_on="demonstrations",
    words="full fine-tuning: every weight is updated",
    key_words="a full fine-tuning setting",
    resolve=_resolve,
    learning_rate=lambda method: 2e-5,
    learning_rate_range=(1e-6, 5e-5),
    lighter="qlora",
)
