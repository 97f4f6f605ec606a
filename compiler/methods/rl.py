"""kind = "grpo" and kind = "rloo": reinforcement learning from declared rewards (trl's GRPOTrainer and
RLOOTrainer), with a LoRA adapter or on every weight.

The policy is model.base: a base model, or a finished run's merged/ folder (hashed in the lock like any base).
Each step samples `num_generations` completions of every prompt, scores them with `[[method.rewards]]` (see
compiler/methods/rewards.py) and pushes the policy towards the completions that beat their group's mean (GRPO) or
the mean of the other completions of their prompt (RLOO's leave-one-out baseline), with a KL pull of strength
`beta` towards the starting policy. With beta = 0 no reference model is loaded.

Batches count prompts: `training.batch_size` prompts per optimizer step, `micro_batch_size` per forward, each
with `num_generations` completions. trl counts completions, so the script passes micro_batch_size x
num_generations as trl's per-device batch. The planner counts num_generations sequences per prompt, the reward
models, and generation. Held-out prompts are scored by `ftc eval` after training, not during it: trl would
sample completions of every held-out prompt at every evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, ResolveContext
from ftc.compiler.methods.dpo import adapter_arguments
from ftc.compiler.methods.lora import LORA_KEYS, LoraFields, LoraPlanFields, check_lora, check_targets
from ftc.compiler.methods.rewards import Reward, check_rewards

# trl's GRPOConfig and RLOOConfig default to learning_rate 1e-6 (full weights); trl's GRPO docs train LoRA adapters
# at 1e-5 and above. Measured here (SmolLM2-135M, LoRA r=16 on every linear layer, CPU): see specs/grpo.toml.
LEARNING_RATE = {"lora": 1e-5, "none": 1e-6}
LEARNING_RATE_RANGE = {"lora": (1e-6, 1e-4), "none": (1e-7, 1e-5)}
DEFAULT_BETA = {"grpo": 0.0, "rloo": 0.05}  # trl's defaults (GRPOConfig.beta, RLOOConfig.beta)
TRAINER = {"grpo": "GRPO", "rloo": "RLOO"}
# What `ftc init --method grpo` writes: a reward any data with reference answers supports, for the user to replace.
STARTER_REWARD = {"kind": "similarity", "metric": "rouge_l", "weight": 1.0}


class _Rl(LoraFields):
    adapter: Literal["lora", "none"] = Field(
        default="lora",
        description="'lora' trains a LoRA adapter (the LoRA keys apply); 'none' updates every weight.",
    )
    num_generations: int = Field(default=4, ge=2, le=64, description="Completions sampled per prompt at each step (the group).")
    max_completion_length: int = Field(default=128, ge=1, le=32768, description="The longest completion sampled, in tokens.")
    temperature: float = Field(default=1.0, gt=0.0, le=2.0, description="Sampling temperature of the completions.")
    beta: float | None = Field(
        default=None,
        ge=0.0,
        le=10.0,
        description="KL pull towards the starting policy; 0 loads no reference model. Unset: trl's default (GRPO 0, RLOO 0.05).",
    )
    rewards: list[Reward] = Field(min_length=1, max_length=16, description="The rewards, each a [[method.rewards]] table.")  # type: ignore[valid-type]


class Grpo(_Rl):
    kind: Literal["grpo"] = Field(description="Group Relative Policy Optimization against declared rewards (trl).")


class Rloo(_Rl):
    kind: Literal["rloo"] = Field(description="REINFORCE Leave-One-Out against declared rewards (trl).")


class RlPlanFields(LoraPlanFields):
    num_generations: int
    max_completion_length: int
    temperature: float
    beta: float
    rewards: list[dict[str, Any]]  # compiler/methods/rewards.py reward_plan, in the spec's order

    def sequences(self) -> int:
        return self.num_generations

    def runs_reference(self) -> bool:
        return self.beta > 0

    @property
    def reward_model_params(self) -> int:
        return sum(r.get("params", 0) for r in self.rewards if r["kind"] == "reward_model")


class GrpoPlan(RlPlanFields):
    kind: Literal["grpo"]


class RlooPlan(RlPlanFields):
    kind: Literal["rloo"]


def _resolve(method: Any, ctx: ResolveContext) -> RlPlanFields:
    plan = GrpoPlan if method.kind == "grpo" else RlooPlan
    return plan(
        kind=method.kind,
        **adapter_arguments(method, ctx),
        num_generations=method.num_generations,
        max_completion_length=method.max_completion_length,
        temperature=method.temperature,
        beta=DEFAULT_BETA[method.kind] if method.beta is None else method.beta,
        rewards=list(ctx.rewards),  # resolved by the compiler (compiler/plan/rewards.py)
    )


def _checks(loaded: Any) -> Iterator[Any]:
    spec = loaded.spec
    method = spec.method
    name = TRAINER[method.kind]
    if method.adapter == "none":
        for key in sorted(set(method.model_fields_set) & set(LORA_KEYS)):
            yield loaded.diag(f"method.{key}", f"{key} has no effect with adapter = \"none\"", 'remove it, or set adapter = "lora"', value=False)
    else:
        yield from check_lora(loaded)
    if spec.data.packing:
        yield loaded.diag("data.packing", f"packing is not available for {name}: it samples completions of each prompt", "remove data.packing, or set it to false")
    t = spec.training
    for key in ("eval_steps", "early_stopping_patience"):
        if getattr(t, key) is not None:
            yield loaded.diag(f"training.{key}", f"{name} does not evaluate during training (trl would sample completions of every held-out prompt each time)", "remove it: `ftc eval RUN` scores the held-out prompts after the run")
    if method.max_completion_length >= spec.data.max_length:
        yield loaded.diag("method.max_completion_length", f"max_completion_length {method.max_completion_length} leaves no room for the prompt within data.max_length {spec.data.max_length}", "raise data.max_length to the longest prompt plus max_completion_length", near=("data.max_length",))
    yield from check_rewards(loaded)


def _model_check(method: Any, info: Any) -> tuple[str, str, str] | None:
    return check_targets(method, info) if method.adapter == "lora" else None


def _method(kind: str, plan: type[RlPlanFields], words: str) -> MethodDef:
    return MethodDef(
        kind=kind,
        spec=Grpo if kind == "grpo" else Rloo,
        plan=plan,
        template="rl.py.j2",
        trains_on="prompts",
        words=words,
        key_words=f"a {TRAINER[kind]} setting",
        resolve=_resolve,
        learning_rate=lambda method: LEARNING_RATE[method.adapter],
        learning_rate_range=lambda method: LEARNING_RATE_RANGE[method.adapter],
        token_loss=False,  # a policy-gradient loss is not a likelihood: its level says nothing about fit
        packing=False,
        evaluates=False,
        checks=_checks,
        model_check=_model_check,
        support=("rewards.py",),
        starter={"rewards": [STARTER_REWARD]},
    )


GRPO = _method("grpo", GrpoPlan, "GRPO against declared rewards")
RLOO = _method("rloo", RlooPlan, "RLOO against declared rewards")
