"""kind = "orpo": Odds Ratio Preference Optimization on chosen/rejected pairs (trl's experimental ORPOTrainer), with
a LoRA adapter or on every weight. One loss teaches the chosen answer (its likelihood, as supervised fine-tuning
does) and prefers it to the rejected one (the log odds ratio): no reference model, so no second forward."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, ResolveContext
from ftc.compiler.methods.dpo import adapter_arguments, check_preference
from ftc.compiler.methods.lora import LoraFields, LoraPlanFields, check_targets

# trl's examples/scripts/orpo.py trains with learning_rate 8e-6 on every weight and 8e-5 with a LoRA adapter
# (https://github.com/huggingface/trl/blob/main/examples/scripts/orpo.py); ORPOConfig's own default is 1e-6
# (trl/experimental/orpo/orpo_config.py). The usual ranges span those, about a factor of 2.5 either side.
LEARNING_RATE = {"lora": 8e-5, "none": 8e-6}
LEARNING_RATE_RANGE = {"lora": (1e-5, 2e-4), "none": (1e-6, 2e-5)}


class Orpo(LoraFields):
    kind: Literal["orpo"] = Field(
        description="Odds Ratio Preference Optimization on chosen/rejected pairs, with no reference model (trl)."
    )
    adapter: Literal["lora", "none"] = Field(
        default="lora",
        description="'lora' trains a LoRA adapter (the LoRA keys apply); 'none' updates every weight.",
    )
    beta: float = Field(
        default=0.1,
        gt=0.0,
        le=10.0,
        description=(
            "Weight of the odds-ratio term beside the chosen answer's likelihood (the paper's lambda; trl calls it "
            "beta). 0.1 is trl's default."
        ),
    )


class OrpoPlan(LoraPlanFields):
    kind: Literal["orpo"]
    beta: float

    sequences_per_example: ClassVar[int] = 2  # the chosen and the rejected answer, in one batch
    reference_forward: ClassVar[bool] = False  # the odds ratio needs the policy alone


def _resolve(method: Orpo, ctx: ResolveContext) -> OrpoPlan:
    return OrpoPlan(kind="orpo", **adapter_arguments(method, ctx), beta=method.beta)


def _checks(loaded: Any) -> Iterator[Any]:
    yield from check_preference(loaded, "ORPO", reference=False)


def _model_check(method: Orpo, info: Any) -> tuple[str, str, str] | None:
    return check_targets(method, info) if method.adapter == "lora" else None


ORPO = MethodDef(
    kind="orpo",
    spec=Orpo,
    plan=OrpoPlan,
    template="preference.py.j2",
    trains_on="preferences",
    words="ORPO on preference pairs",
    key_words="an ORPO setting",
    resolve=_resolve,
    learning_rate=lambda method: LEARNING_RATE[method.adapter],
    learning_rate_range=lambda method: LEARNING_RATE_RANGE[method.adapter],
    token_loss=False,  # the likelihood of the chosen answer plus beta x the odds-ratio term: not a token loss alone
    packing=False,
    checks=_checks,
    model_check=_model_check,
)
