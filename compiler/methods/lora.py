"""kind = "lora": low-rank adapters on a frozen base (peft's LoraConfig). QLoRA and DPO reuse its fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, MethodPlan, ResolveContext
from ftc.compiler.plan.modelinfo import ModelInfo, lora_trainable
from ftc.compiler.schema import SpecModel

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora", "modules_to_save")


class LoraFields(SpecModel):
    """peft LoraConfig arguments, named as peft names them."""

    r: int = Field(default=16, ge=1, le=1024, description="LoRA rank. 8-64 is usual; 16 is a good start.")
    lora_alpha: int = Field(
        default=32, ge=1, description="LoRA scaling numerator (scale = lora_alpha / r). Often 2 x r."
    )
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default=list(DEFAULT_TARGETS),
        min_length=1,
        description=(
            "Module names to adapt, e.g. q_proj, k_proj, v_proj, o_proj (add gate_proj, up_proj, "
            "down_proj for the MLP), or 'all-linear'."
        ),
    )
    bias: Literal["none", "all", "lora_only"] = Field(default="none", description="Which biases to train.")
    use_rslora: bool = Field(default=False, description="Rank-stabilised scaling (lora_alpha / sqrt(r)).")
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Extra modules trained in full and saved with the adapter, e.g. lm_head.",
    )


class Lora(LoraFields):
    kind: Literal["lora"] = Field(description="Train low-rank adapters on a frozen base (peft).")


class LoraPlanFields(MethodPlan):
    """The LoRA arguments as the plan records them (absent when the method trains no adapter)."""

    r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    target_modules: list[str] | str | None = None
    bias: str | None = None
    use_rslora: bool | None = None
    modules_to_save: list[str] | None = None

    omit_when_none = frozenset(LORA_KEYS)


class LoraPlan(LoraPlanFields):
    kind: Literal["lora"]


def lora_arguments(method: LoraFields) -> dict[str, Any]:
    return {key: getattr(method, key) for key in LORA_KEYS} | {"modules_to_save": list(method.modules_to_save)}


def lora_trainable_params(method: LoraFields, info: ModelInfo) -> int:
    """Parameters the optimizer updates: the adapters, plus the modules trained in full beside them."""
    trainable, _ = lora_trainable(info, method.target_modules, method.r)
    return trainable + sum(info.param_counts.get(name, 0) for name in method.modules_to_save)


def check_targets(method: LoraFields, info: ModelInfo) -> tuple[str, str, str] | None:
    """Every target module must name a linear layer of the model."""
    _, unmatched = lora_trainable(info, method.target_modules, method.r)
    if not unmatched:
        return None
    names = sorted({n.rsplit(".", 1)[-1] for n in info.linear_shapes})
    return (
        "method.target_modules",
        f"no linear layer of {info.architecture} is named {', '.join(map(repr, unmatched))}",
        "this model has: " + ", ".join(names),
    )


def check_scale(loaded: Any) -> Iterator[Any]:
    method = loaded.spec.method
    if method.lora_alpha / method.r > 16 and not method.use_rslora:
        yield loaded.diag(
            "method.lora_alpha",
            f"lora_alpha / r = {method.lora_alpha / method.r:g} is unusually large",
            "a scale of 1-2 is usual (lora_alpha = r or 2 x r)",
            severity="warning",
            near=("method.r",),
        )


def _resolve(method: Lora, ctx: ResolveContext) -> LoraPlan:
    return LoraPlan(
        kind="lora",
        adapter="lora",
        **lora_arguments(method),
        trainable_params=lora_trainable_params(method, ctx.info),
        total_params=ctx.info.total_params,
    )


LORA = MethodDef(
    kind="lora",
    spec=Lora,
    plan=LoraPlan,
    template="sft.py.j2",
    trains_on="demonstrations",
    words="LoRA: low-rank adapters on a frozen base",
    key_words="a LoRA setting",
    resolve=_resolve,
    learning_rate=lambda method: 2e-4,
    learning_rate_range=(1e-4, 3e-4),
    lighter="qlora",
    checks=check_scale,
    model_check=check_targets,
)
