"""kind = "reward": a scalar reward model trained on chosen/rejected pairs (trl's RewardTrainer), with a LoRA
adapter or on every weight.

The base model gets a sequence-classification head with one output (transformers' *ForSequenceClassification,
a new linear layer from the last token's hidden state), and the Bradley-Terry loss -log sigmoid(r_chosen -
r_rejected) teaches it to score the chosen answer above the rejected one. With LoRA the head trains in full beside
the adapter (peft's SEQ_CLS task does that). The script folds the adapter in before it saves, so final/ is a
whole model folder that a grpo or rloo spec names as a `reward_model` reward: the run's output is the artifact.
`ftc eval` scores held-out pairs (pairwise accuracy and mean margin, base head against tuned); a reward model is
not merged or served.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, ResolveContext
from ftc.compiler.methods.dpo import adapter_arguments, check_preference
from ftc.compiler.methods.lora import LoraFields, LoraPlanFields, check_targets

# trl's reward-modelling example (trl/scripts/reward_modeling.py, its docstring) trains every weight at 1e-5 and a
# LoRA adapter at 1e-4; RewardConfig's own default is 1e-4.
LEARNING_RATE = {"lora": 1e-4, "none": 1e-5}
LEARNING_RATE_RANGE = {"lora": (1e-5, 5e-4), "none": (1e-6, 5e-5)}


class RewardModel(LoraFields):
    kind: Literal["reward"] = Field(
        description="A reward model: a scalar score trained on chosen/rejected pairs, for grpo and rloo (trl)."
    )
    adapter: Literal["lora", "none"] = Field(
        default="lora",
        description="'lora' trains a LoRA adapter and the new score head (the LoRA keys apply); 'none' updates every weight.",
    )
    center_rewards_coefficient: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Pulls the mean score towards 0 (trl's center_rewards_coefficient; 0.01 is usual); unset: off.",
    )


class RewardPlan(LoraPlanFields):
    kind: Literal["reward"]
    center_rewards_coefficient: float | None = None

    omit_when_none = LoraPlanFields.omit_when_none | {"center_rewards_coefficient"}

    sequences_per_example: ClassVar[int] = 2  # chosen and rejected
    merge_refusal: ClassVar[str | None] = (
        "a reward model's final/ already holds whole weights (the run folds its adapter in): point a grpo or rloo "
        "spec's reward_model reward at it"
    )
    generates: ClassVar[bool] = False
    serve_as: ClassVar[None] = None
    serve_refusal: ClassVar[str | None] = (
        "a reward model scores answers and generates none: point a grpo or rloo spec's reward_model reward at its final/"
    )

    @property
    def produces_adapter(self) -> bool:
        return False  # final/ holds the whole reward model, the adapter folded in by the script

    @property
    def vllm_adapter(self) -> bool:
        return False


def _resolve(method: RewardModel, ctx: ResolveContext) -> RewardPlan:
    arguments = adapter_arguments(method, ctx)
    arguments["trainable_params"] += ctx.info.hidden_size  # the score head: hidden_size x 1, no bias
    return RewardPlan(kind="reward", **arguments, center_rewards_coefficient=method.center_rewards_coefficient)


def _checks(loaded: Any) -> Iterator[Any]:
    yield from check_preference(loaded, "a reward model", reference=False)
    if loaded.spec.data.overlong == "truncate":
        yield loaded.diag("data.overlong", "trl's RewardTrainer drops pairs longer than max_length rather than truncating them", 'set overlong = "drop" (the plan lists the dropped lines) or "error", or raise max_length')


def _model_check(method: RewardModel, info: Any) -> tuple[str, str, str] | None:
    return check_targets(method, info) if method.adapter == "lora" else None


REWARD = MethodDef(
    kind="reward",
    spec=RewardModel,
    plan=RewardPlan,
    template="preference.py.j2",
    trains_on="preferences",
    words="a reward model on preference pairs",
    key_words="a reward-model setting",
    resolve=_resolve,
    learning_rate=lambda method: LEARNING_RATE[method.adapter],
    learning_rate_range=lambda method: LEARNING_RATE_RANGE[method.adapter],
    token_loss=False,  # -log sigmoid of a score margin: its level says nothing about fit per token
    packing=False,
    checks=_checks,
    model_check=_model_check,
)
