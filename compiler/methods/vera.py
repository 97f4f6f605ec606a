"""kind = "vera": VeRA, one pair of frozen random low-rank matrices shared by every adapted layer, with small
trained scaling vectors per layer (peft's VeraConfig). A tenth of LoRA's trainable parameters or less at the same
rank; it merges into the base like LoRA."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, MethodPlan, ResolveContext
from ftc.compiler.methods.lora import check_module_lists, check_targets, saved_params
from ftc.compiler.methods.peft_counts import VERA_TARGETS, vera_trainable
from ftc.compiler.schema import SpecModel

VERA_KEYS = (
    "r", "target_modules", "projection_prng_key", "save_projection", "vera_dropout", "d_initial", "bias",
    "modules_to_save",
)  # fmt: skip


class Vera(SpecModel):
    kind: Literal["vera"] = Field(description="VeRA: shared frozen random projections, trained scaling vectors (peft).")
    r: int = Field(
        default=256, ge=1, le=4096, description="Rank of the shared projections (peft's default 256; costs little)."
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        default=list(VERA_TARGETS), min_length=1, description="Module names to adapt (peft's default: q_proj, v_proj)."
    )
    projection_prng_key: int = Field(
        default=0, ge=0, description="Seed of the shared random projections (recorded, so the adapter is rebuilt exactly)."
    )
    save_projection: bool = Field(
        default=True,
        description="Save the shared projections with the adapter (larger file; loads without regenerating them).",
    )
    vera_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    d_initial: float = Field(default=0.1, gt=0.0, description="Initial value of the trained vector d.")
    bias: Literal["none", "all", "vera_only"] = Field(default="none", description="Which biases to train.")
    modules_to_save: list[str] = Field(
        default_factory=list, description="Extra modules trained in full and saved with the adapter, e.g. lm_head."
    )


class VeraPlan(MethodPlan):
    kind: Literal["vera"]
    r: int
    target_modules: list[str] | str
    projection_prng_key: int
    save_projection: bool
    vera_dropout: float
    d_initial: float
    bias: str
    modules_to_save: list[str]

    peft_config: ClassVar[str] = "VeraConfig"

    def peft_arguments(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in VERA_KEYS} | {"modules_to_save": self.modules_to_save or None}


def _resolve(method: Vera, ctx: ResolveContext) -> VeraPlan:
    return VeraPlan(
        kind="vera",
        adapter="vera",
        **{key: getattr(method, key) for key in VERA_KEYS},
        trainable_params=vera_trainable(ctx.info, method.target_modules, method.r)
        + saved_params(method.modules_to_save, ctx.info),
        total_params=ctx.info.total_params,
    )


def _checks(loaded: Any) -> Iterator[Any]:
    yield from check_module_lists(loaded)
    if not loaded.spec.method.save_projection:
        yield loaded.diag(
            "method.save_projection",
            "without the projections, loading the adapter regenerates them from projection_prng_key, which is only "
            "the same on the same torch version and device",
            "keep save_projection = true unless the adapter's size matters",
            severity="warning",
        )


VERA = MethodDef(
    kind="vera",
    spec=Vera,
    plan=VeraPlan,
    template="sft.py.j2",
    trains_on="demonstrations",
    words="VeRA: shared random projections with trained scaling vectors",
    key_words="a VeRA setting",
    resolve=_resolve,
    # The VeRA paper (Kopiczko et al. 2024, tables 8 and 10) instruction-tunes Llama with 4e-3 and uses 4e-3 to 1e-2
    # on GLUE; peft's method comparison trains Llama-3.2-3B at 1e-3 (huggingface/peft@5d602fd method_comparison/MetaMathQA/experiments/vera/
    # llama-3.2-3B-default/training_params.json) and its VeRA example at 2e-2 (examples/sequence_classification/
    # VeRA.ipynb). Only the scaling vectors train, so the rates sit far above LoRA's.
    learning_rate=lambda method: 4e-3,
    learning_rate_range=(5e-4, 2e-2),
    checks=_checks,
    model_check=check_targets,
    capacity="adapt more modules (method.target_modules) or raise method.r",
)
