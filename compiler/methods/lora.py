"""kind = "lora": low-rank adapters on a frozen base (peft's LoraConfig). QLoRA and DPO reuse its fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from ftc.compiler.diagnostics import did_you_mean
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
    return trainable + saved_params(method.modules_to_save, info)


def saved_params(modules_to_save: list[str], info: ModelInfo) -> int:
    """Parameters of the modules peft trains in full beside an adapter (modules_to_save)."""
    if not info.module_params:  # a summary without every module's count: the top-level modules only
        return sum(info.param_counts.get(name, 0) for name in modules_to_save)
    saved = [name for name in info.module_params if any(_saves(name, entry) for entry in modules_to_save)]
    outermost = [name for name in saved if not any(name.startswith(other + ".") for other in saved)]
    return sum(info.module_params[name] for name in outermost)


def _saves(name: str, entry: str) -> bool:
    """peft trains a module in full when its dotted name ends with an entry of modules_to_save (as text: "head"
    matches lm_head)."""
    return name.endswith(entry)


def check_targets(method: Any, info: ModelInfo) -> tuple[str, str, str] | None:
    """Every target module must name a linear layer of the model, and every module to save a module of it (any
    method whose table has target_modules and modules_to_save: LoRA's, IA3's, AdaLoRA's, VeRA's)."""
    for key in ("target_modules", "feedforward_modules"):
        names = getattr(method, key, None)
        _, unmatched = lora_trainable(info, names, 1) if names is not None else (0, [])
        if unmatched:
            layers = sorted({n.rsplit(".", 1)[-1] for n in info.linear_shapes})
            return (
                f"method.{key}",
                f"no linear layer of {info.architecture} is named {', '.join(map(repr, unmatched))}",
                "this model has: " + ", ".join(layers),
            )
    return _check_modules_to_save(method.modules_to_save, info)


def _check_modules_to_save(modules_to_save: list[str], info: ModelInfo) -> tuple[str, str, str] | None:
    """peft trains in full every module whose name ends with an entry, and silently nothing for an entry that matches
    no module: refuse such an entry, with the nearest module name as the hint."""
    known = set(info.module_params) or set(info.param_counts) | {name for full in info.linear_shapes for name in _prefixes(full)}
    leaves = sorted({name.rsplit(".", 1)[-1] for name in known if not name.rsplit(".", 1)[-1].isdigit()})
    for i, entry in enumerate(modules_to_save):
        if any(_saves(name, entry) for name in known):
            continue
        close = did_you_mean(entry, leaves)
        return (
            f"method.modules_to_save.{i}",
            f"no module of {info.architecture} is named {entry!r}: nothing extra would be trained",
            close or "name modules of the model, e.g. " + ", ".join(leaves[:8]),
        )
    return None


def _prefixes(name: str) -> Iterator[str]:
    """'model.layers.0.mlp' -> model, model.layers, model.layers.0, model.layers.0.mlp."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


def check_lora(loaded: Any) -> Iterator[Any]:
    """The checks of every method with a LoRA adapter: lists that name a module twice, and the scale."""
    yield from check_module_lists(loaded)
    yield from check_scale(loaded)


def check_module_lists(loaded: Any) -> Iterator[Any]:
    """No module named twice in the method's lists of modules (target_modules, feedforward_modules, modules_to_save)."""
    method = loaded.spec.method
    lists = [key for key in ("target_modules", "feedforward_modules", "modules_to_save") if isinstance(getattr(method, key, None), list)]
    for key in lists:
        seen: set[str] = set()
        for i, name in enumerate(getattr(method, key)):
            if name in seen:
                yield loaded.diag(f"method.{key}.{i}", f"{name!r} is listed twice", "list each module once (was another module meant?)")
            seen.add(name)


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
    checks=check_lora,
    model_check=check_targets,
    capacity="give LoRA more capacity (method.r, target_modules = \"all-linear\")",
)
