"""The method registry: every training method ftc knows, each declared once in its own module.

Adding a method is a module here (its spec table, plan entry, resolve function and MethodDef), its template under
templates/, its tests and its docs. The spec's `[method]` union, the plan's `method` union, validation's hints, the
resolver, the hardware planner and the build all read `METHODS`.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, MethodPlan, ResolveContext
from ftc.compiler.methods.dpo import DPO, Dpo
from ftc.compiler.methods.full import FULL, Full
from ftc.compiler.methods.lora import DEFAULT_TARGETS, LORA, Lora, LoraFields
from ftc.compiler.methods.qlora import QLORA, Qlora

METHODS: dict[str, MethodDef] = {m.kind: m for m in (FULL, LORA, QLORA, DPO)}
METHOD_KINDS = tuple(METHODS)

# The [method] table and the plan's method entry: discriminated unions on `kind`, in registry order.
Method = Annotated[Union[tuple(m.spec for m in METHODS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]
AnyMethodPlan = Annotated[Union[tuple(m.plan for m in METHODS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]



__all__ = [
    "DEFAULT_TARGETS",
    "METHODS",
    "METHOD_KINDS",
    "AnyMethodPlan",
    "Dpo",
    "Full",
    "Lora",
    "LoraFields",
    "Method",
    "MethodDef",
    "MethodPlan",
    "Qlora",
    "ResolveContext",
]
