"""kind = "ia3": (IA)^3, learned vectors that rescale the keys, values and feed-forward activations of a frozen
base (peft's IA3Config). The fewest trainable parameters of the weight-based adapters; it merges into the base."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, MethodPlan, ResolveContext
from ftc.compiler.methods.lora import check_module_lists, check_targets, saved_params
from ftc.compiler.methods.peft_counts import IA3_FEEDFORWARD, IA3_TARGETS, ia3_trainable
from ftc.compiler.plan.modelinfo import ModelInfo
from ftc.compiler.schema import SpecModel

IA3_KEYS = ("target_modules", "feedforward_modules", "modules_to_save")


class Ia3(SpecModel):
    kind: Literal["ia3"] = Field(description="(IA)^3: learned vectors rescaling activations of a frozen base (peft).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default=list(IA3_TARGETS),
        min_length=1,
        description="Modules whose activations are rescaled: peft's default for Llama is k_proj, v_proj, down_proj.",
    )
    feedforward_modules: list[str] = Field(
        default=list(IA3_FEEDFORWARD),
        description=(
            "Which of target_modules are feed-forward layers: their inputs are rescaled, not their outputs "
            "(peft's default for Llama: down_proj)."
        ),
    )
    modules_to_save: list[str] = Field(
        default_factory=list, description="Extra modules trained in full and saved with the adapter, e.g. lm_head."
    )


class Ia3Plan(MethodPlan):
    kind: Literal["ia3"]
    target_modules: list[str]  # "all-linear" resolved to the layers' names
    feedforward_modules: list[str]
    modules_to_save: list[str]

    peft_config: ClassVar[str] = "IA3Config"

    def peft_arguments(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in IA3_KEYS} | {"modules_to_save": self.modules_to_save or None}


def _resolve(method: Ia3, ctx: ResolveContext) -> Ia3Plan:
    return Ia3Plan(
        kind="ia3",
        adapter="ia3",
        target_modules=_named(method.target_modules, ctx.info),
        feedforward_modules=list(method.feedforward_modules),
        modules_to_save=list(method.modules_to_save),
        trainable_params=ia3_trainable(ctx.info, method.target_modules, method.feedforward_modules)
        + saved_params(method.modules_to_save, ctx.info),
        total_params=ctx.info.total_params,
    )


def _named(targets: list[str] | str, info: ModelInfo) -> list[str]:
    """ "all-linear" as the names of the model's linear layers. peft saves "all-linear" as every layer's full name,
    and then refuses to load its own adapter: the feed-forward names are no longer a subset of the targets."""
    if targets != "all-linear":
        return list(targets)
    return sorted({name.rsplit(".", 1)[-1] for name in info.linear_shapes})


def _checks(loaded: Any) -> Iterator[Any]:
    method = loaded.spec.method
    yield from check_module_lists(loaded)
    if isinstance(method.target_modules, list):
        for i, name in enumerate(method.feedforward_modules):
            if name not in method.target_modules:  # peft raises at get_peft_model
                yield loaded.diag(
                    f"method.feedforward_modules.{i}",
                    f"{name!r} is a feed-forward module but not one of target_modules",
                    f"add {name!r} to target_modules, or remove it here (feedforward_modules must be a subset)",
                )


IA3 = MethodDef(
    kind="ia3",
    spec=Ia3,
    plan=Ia3Plan,
    template="sft.py.j2",
    trains_on="demonstrations",
    words="(IA)^3: learned rescaling vectors on a frozen base",
    key_words="an IA3 setting",
    resolve=_resolve,
    # The (IA)^3 paper (Liu et al. 2022, section 3.3) trains with 3e-3. peft's method comparison on Llama-3.2-3B
    # (huggingface/peft@5d602fd method_comparison/MetaMathQA/results/ia3--*.json) scores 31.1% at 1e-4, 39.8% at 1e-3 and 45.5% at 5e-3 (more targets); peft's
    # examples use 1e-3 (examples/sequence_classification/IA3.ipynb) to 8e-3 (conditional_generation/
    # peft_ia3_seq2seq.ipynb). The vectors are few and start at one: LoRA's rates barely move them.
    learning_rate=lambda method: 3e-3,
    learning_rate_range=(5e-4, 1e-2),
    checks=_checks,
    model_check=check_targets,
    capacity="rescale more modules (method.target_modules = \"all-linear\") or use kind = \"lora\"",
)
