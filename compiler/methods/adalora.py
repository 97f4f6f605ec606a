"""kind = "adalora": AdaLoRA, LoRA whose rank is reallocated during training, from a starting rank (init_r) down
to a budget (target_r) spent where the gradients say it matters (peft's AdaLoraConfig).

peft does the reallocation in `update_and_allocate(step)`, which neither transformers' Trainer nor trl calls: the
generated script calls it after every optimizer step (templates/sft.py.j2: AdaLoraBudget), with total_step set to
the plan's max_steps, and saves the allocator's running scores with each checkpoint so that a resumed run
reallocates as an uninterrupted one does. The result merges into the base like LoRA's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, MethodPlan, ResolveContext
from ftc.compiler.methods.lora import DEFAULT_TARGETS, check_module_lists, check_targets, saved_params
from ftc.compiler.methods.peft_counts import adalora_trainable
from ftc.compiler.schema import SpecModel

ADALORA_KEYS = (
    "init_r", "target_r", "tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight",
    "lora_alpha", "lora_dropout", "target_modules", "modules_to_save",
)  # fmt: skip


class Adalora(SpecModel):
    kind: Literal["adalora"] = Field(description="AdaLoRA: LoRA whose ranks are reallocated while training (peft).")
    init_r: int = Field(default=12, ge=1, le=1024, description="The rank every adapted layer starts with.")
    target_r: int = Field(
        default=8, ge=1, le=1024, description="The average rank per layer at the end: the budget reallocated to."
    )
    tinit: int = Field(default=0, ge=0, description="Steps at the start before ranks are pruned (warm-up).")
    tfinal: int = Field(default=0, ge=0, description="Steps at the end with the ranks fixed (final fine-tuning).")
    deltaT: int = Field(default=1, ge=1, description="Steps between two reallocations.")  # noqa: N815 - peft's name
    beta1: float = Field(default=0.85, gt=0.0, lt=1.0, description="EMA coefficient of the sensitivity.")
    beta2: float = Field(default=0.85, gt=0.0, lt=1.0, description="EMA coefficient of the uncertainty.")
    orth_reg_weight: float = Field(
        default=0.5, ge=0.0, description="Weight of the loss that keeps the singular vectors orthogonal."
    )
    lora_alpha: int = Field(default=32, ge=1, description="Scaling numerator (scale = lora_alpha / current rank).")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default=list(DEFAULT_TARGETS), min_length=1, description="Module names to adapt, as for LoRA."
    )
    modules_to_save: list[str] = Field(
        default_factory=list, description="Extra modules trained in full and saved with the adapter, e.g. lm_head."
    )


class AdaloraPlan(MethodPlan):
    kind: Literal["adalora"]
    init_r: int
    target_r: int
    tinit: int
    tfinal: int
    deltaT: int  # noqa: N815 - peft's name
    beta1: float
    beta2: float
    orth_reg_weight: float
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str] | str
    modules_to_save: list[str]

    peft_config: ClassVar[str] = "AdaLoraConfig"

    def peft_arguments(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ADALORA_KEYS} | {"modules_to_save": self.modules_to_save or None}


def _resolve(method: Adalora, ctx: ResolveContext) -> AdaloraPlan:
    return AdaloraPlan(
        kind="adalora",
        adapter="adalora",
        **{key: getattr(method, key) for key in ADALORA_KEYS},
        trainable_params=adalora_trainable(ctx.info, method.target_modules, method.init_r)
        + saved_params(method.modules_to_save, ctx.info),
        total_params=ctx.info.total_params,
    )


def _checks(loaded: Any) -> Iterator[Any]:
    method = loaded.spec.method
    yield from check_module_lists(loaded)
    if method.target_r >= method.init_r:  # peft fails at the first reallocation (torch.kthvalue)
        yield loaded.diag(
            "method.target_r",
            f"target_r {method.target_r} is not below init_r {method.init_r}: AdaLoRA prunes ranks from init_r down to "
            "target_r, and with none to prune peft fails at the first reallocation",
            f"set target_r below {method.init_r} (or use kind = \"lora\" with r = {method.target_r})",
        )


def _plan_check(loaded: Any, plan: Any) -> Iterator[Any]:
    """peft's budget schedule needs steps between the warm-up (tinit) and the final phase (tfinal): total_step is
    the plan's max_steps, and with no step left between them peft divides by zero or never prunes."""
    method, steps = plan.method, plan.training.max_steps
    if method.tinit + method.tfinal >= steps:
        yield loaded.diag(
            "method.tinit",
            f"tinit {method.tinit} + tfinal {method.tfinal} leave none of the run's {steps} steps to reallocate ranks in",
            f"make tinit + tfinal less than {steps} (AdaLoRA's total_step is the plan's max_steps), or train longer",
            near=("method.tfinal",),
        )


ADALORA = MethodDef(
    kind="adalora",
    spec=Adalora,
    plan=AdaloraPlan,
    template="sft.py.j2",
    trains_on="demonstrations",
    words="AdaLoRA: LoRA with ranks reallocated during training",
    key_words="an AdaLoRA setting",
    resolve=_resolve,
    # The AdaLoRA paper (Zhang et al. 2023, appendix E and F) fine-tunes DeBERTaV3 and BART with 5e-4 to 1e-3;
    # peft's AdaLoRA examples (huggingface/peft examples/conditional_generation/peft_adalora_seq2seq.py) use 1e-3.
    # A rank budget that keeps shrinking needs LoRA's rates or a little more.
    learning_rate=lambda method: 5e-4,
    learning_rate_range=(1e-4, 1e-3),
    checks=_checks,
    model_check=check_targets,
    plan_check=_plan_check,
    capacity="raise the rank budget (method.init_r and method.target_r) or adapt more modules (method.target_modules)",
)
