"""kind = "dpo": Direct Preference Optimization on chosen/rejected pairs (trl's DPOTrainer), with a LoRA adapter
or on every weight."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, ResolveContext
from ftc.compiler.methods.lora import (
    LORA_KEYS,
    LoraFields,
    LoraPlanFields,
    check_lora,
    check_targets,
    lora_arguments,
    lora_trainable_params,
)


class Dpo(LoraFields):
    kind: Literal["dpo"] = Field(description="Direct Preference Optimization on chosen/rejected pairs (trl).")
    adapter: Literal["lora", "none"] = Field(
        default="lora",
        description="'lora' trains a LoRA adapter (the LoRA keys apply); 'none' updates every weight.",
    )
    beta: float = Field(
        default=0.1, gt=0.0, le=10.0, description="Strength of the pull towards the reference model."
    )
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = Field(
        default="sigmoid", description="DPO loss variant, as trl names it."
    )
    reference: str = Field(
        default="base",
        min_length=1,
        description=(
            "The reference model: 'base' (the base model; with a LoRA adapter trl disables the adapter "
            "instead of loading a copy) or the path of another model."
        ),
    )


class DpoPlan(LoraPlanFields):
    kind: Literal["dpo"]
    beta: float
    loss_type: str
    reference: str

    sequences_per_example: ClassVar[int] = 2
    reference_forward: ClassVar[bool] = True


def _resolve(method: Dpo, ctx: ResolveContext) -> DpoPlan:
    return DpoPlan(
        kind="dpo",
        **adapter_arguments(method, ctx),
        beta=method.beta,
        loss_type=method.loss_type,
        reference=method.reference,
    )


def adapter_arguments(method: Any, ctx: ResolveContext) -> dict[str, Any]:
    """The plan entry's adapter, LoRA arguments and parameter counts, for a method that trains a LoRA adapter or
    every weight (adapter = "lora" | "none": DPO, ORPO, KTO)."""
    lora = method.adapter == "lora"
    return {
        "adapter": method.adapter,
        **(lora_arguments(method) if lora else {}),
        "trainable_params": lora_trainable_params(method, ctx.info) if lora else ctx.info.total_params,
        "total_params": ctx.info.total_params,
    }


def _checks(loaded: Any) -> Iterator[Any]:
    yield from check_preference(loaded, "DPO")


def check_preference(loaded: Any, name: str, reference: bool = True) -> Iterator[Any]:
    """The checks of a preference method with a LoRA adapter or full weights (DPO, ORPO, KTO): LoRA keys that do
    nothing without the adapter, the reference model (for a method that has one), packing, and LoRA's own checks."""
    spec = loaded.spec
    method = spec.method
    if method.adapter == "none":
        for key in sorted(set(method.model_fields_set) & set(LORA_KEYS)):
            yield loaded.diag(f"method.{key}", f"{key} has no effect with adapter = \"none\"", 'remove it, or set adapter = "lora"', value=False)
    if reference and method.reference != "base" and method.adapter == "lora":
        yield loaded.diag("method.reference", "with a LoRA adapter the reference is the base model with the adapter off", 'remove reference, or set adapter = "none" to train full weights against it')
    elif reference and method.reference != "base":
        yield from _check_reference(loaded, method.reference)
    if spec.data.packing:
        yield loaded.diag("data.packing", f"packing is not available for {name}", "remove data.packing, or set it to false")
    if method.adapter == "lora":
        yield from check_lora(loaded)


def _check_reference(loaded: Any, reference: str) -> Iterator[Any]:
    """A reference model other than "base" is a local folder or file: one that exists, and not the base itself."""
    if "\0" in reference:
        yield loaded.diag("method.reference", "the reference model's path contains a NUL byte, which no file name can hold", "write the path without it")
        return
    try:
        path = loaded.resolve(reference)
        found = path.exists()
    except (OSError, RuntimeError):  # pathlib reports a symbolic link loop as RuntimeError
        yield loaded.diag("method.reference", f"{reference} is a symbolic link loop", "point the link at a model folder")
        return
    if not found:
        yield loaded.diag("method.reference", f"reference model not found: {reference}", "use 'base' or a local model folder relative to the spec")
    elif _same_path(loaded, loaded.spec.model.base, path):
        yield loaded.diag("method.reference", "the reference is the base model itself", 'write reference = "base", which means the same', severity="warning")


def _same_path(loaded: Any, written: str, path: Any) -> bool:
    try:
        return not written.startswith("pkg:") and loaded.resolve(written) == path
    except (OSError, RuntimeError, ValueError):  # a base that cannot be resolved is model.base's diagnostic
        return False


def _model_check(method: Dpo, info: Any) -> tuple[str, str, str] | None:
    return check_targets(method, info) if method.adapter == "lora" else None


DPO = MethodDef(
    kind="dpo",
    spec=Dpo,
    plan=DpoPlan,
    template="preference.py.j2",
    trains_on="preferences",
    words="DPO on preference pairs",
    key_words="a DPO setting",
    resolve=_resolve,
    learning_rate=lambda method: 5e-5 if method.adapter == "lora" else 5e-6,
    token_loss=False,  # the DPO loss compares the pair's log-ratios: no loss level means "high"
    packing=False,
    checks=_checks,
    model_check=_model_check,
)
