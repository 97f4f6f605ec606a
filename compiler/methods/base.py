"""What a training method declares, once: `MethodDef`, and the plan entry every method resolves to.

A method is one module in this package. It declares:
- `spec`: its [method] table (a pydantic model on the spec's strict base, discriminated by `kind`);
- `plan`: its entry in the plan (`Plan.method`), which the generated script, the planners and the runtime read;
- `resolve`: how the table and the model's shapes become that entry;
- its template (one per method family), its default learning rate and the usual range, the data it trains on,
  and the checks that only make sense for it;
- through the plan entry's properties, what the memory and time model needs (a 4-bit base, sequences per example,
  a frozen reference copy, the utilization to assume) and what merge and serve do with the output (an adapter to
  fold into the base, or whole weights).

Everything else (the resolver, the hardware planner, the build, validation, merge, eval, serve) asks the registry in
`ftc.compiler.methods` and holds no list of kinds of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ftc.compiler.plan.base import PlanModel
from ftc.compiler.schema import SpecModel

if TYPE_CHECKING:
    from ftc.compiler.diagnostics import Diagnostic
    from ftc.compiler.plan.modelinfo import ModelInfo
    from ftc.compiler.spec.validate import LoadedSpec

SCRIPT_SUPPORT = ("load_model.py", "prepare.py", "run_support.py")  # included verbatim by every method's template


ADAPTERS = ("lora", "ia3", "adalora", "vera", "prompt_tuning", "p_tuning", "prefix_tuning")  # peft's, by its names
PROMPT_LEARNING = ("prompt_tuning", "p_tuning", "prefix_tuning")  # virtual tokens, not weight deltas: nothing to merge


class MethodPlan(PlanModel):
    """The method's entry in the plan. Subclasses add the library arguments they resolve (peft's, trl's)."""

    kind: str
    adapter: Literal["lora", "ia3", "adalora", "vera", "prompt_tuning", "p_tuning", "prefix_tuning", "none"]
    trainable_params: int
    total_params: int

    # What the memory and time model needs (compiler/plan/hardware.py reads these through the kind):
    quantized_base: ClassVar[bool] = False  # the frozen base is held in 4 bits (bitsandbytes NF4/FP4)
    sequences_per_example: ClassVar[int] = 1  # preference methods score a chosen and a rejected sequence
    reference_forward: ClassVar[bool] = False  # each step also runs a frozen reference model forward; without
    # an adapter to switch off, that reference is a second copy of the base in memory
    utilization: ClassVar[float | None] = None  # the share of the GPU's peak to assume; None: by adapter

    # What merge and serve do with the output (runtime/merge.py, runtime/serve/):
    merge_refusal: ClassVar[str | None] = None  # why `ftc merge` cannot fold the output into the base; None: it can
    serve_as: ClassVar[Literal["weights", "prompt_embeds"] | None] = "weights"  # how vLLM serves it; None: it cannot
    serve_refusal: ClassVar[str | None] = None  # why vLLM cannot serve it (when serve_as is None)
    gradient_checkpointing: ClassVar[bool] = True  # training can recompute activations (prefix tuning cannot)
    generates: ClassVar[bool] = True  # the output answers prompts (a reward model scores answers and writes none)

    def sequences(self) -> int:
        """Sequences the model runs per example (per prompt for GRPO and RLOO: the completions of its group)."""
        return self.sequences_per_example

    def runs_reference(self) -> bool:
        """Each step runs a frozen reference forward (for GRPO and RLOO: only when beta > 0)."""
        return self.reference_forward

    @property
    def reward_model_params(self) -> int:
        """Weights of the reward models the run loads beside the policy (GRPO and RLOO)."""
        return 0

    @property
    def produces_adapter(self) -> bool:
        """final/ holds a peft adapter on the base (adapter_config.json names its type), not whole weights."""
        return self.adapter != "none"

    @property
    def vllm_adapter(self) -> bool:
        """vLLM can load the adapter itself (`ftc serve --adapter`): it loads LoRA adapters only."""
        return self.adapter == "lora"


def utilization_of(plan: type[MethodPlan], adapter: str) -> float:
    """The share of the GPU's peak the time estimate assumes: 35% with an adapter, 40% for full weights, unless
    the method says otherwise (QLoRA dequantizes on every matmul)."""
    if plan.utilization is not None:
        return plan.utilization
    return 0.40 if adapter == "none" else 0.35


@dataclass(frozen=True)
class ResolveContext:
    """What a method needs to resolve its plan entry besides its own table."""

    info: ModelInfo
    accelerator: str  # "auto" | "cpu" | "cuda"
    rewards: tuple[dict[str, Any], ...] = ()  # GRPO and RLOO: the rewards' plan entries (compiler/plan/rewards.py)


@dataclass(frozen=True)
class MethodDef:
    kind: str
    spec: type[SpecModel]
    plan: type[MethodPlan]
    template: str  # the script template under templates/
    trains_on: Literal["demonstrations", "preferences", "unpaired", "prompts"]  # unpaired: prompt, completion, good or
    # bad; prompts: prompts with reference answers, which GRPO and RLOO sample completions of
    words: str  # how `ftc plan` names it
    key_words: str  # what a key of this method is, for "unknown key" hints: '"r" is {key_words}'
    resolve: Callable[[Any, ResolveContext], MethodPlan]
    learning_rate: Callable[[Any], float]  # the default when the spec gives none
    learning_rate_range: tuple[float, float] | Callable[[Any], tuple[float, float]] | None = None  # outside: a warning
    token_loss: bool = True  # the training loss is a per-token likelihood (so a high one means underfitting)
    packing: bool = True  # the default of data.packing
    cuda_optim: str = "adamw_torch"  # what optim = "auto" means on CUDA
    lighter: str | None = None  # the kind the hardware planner suggests when this one does not fit
    capacity: str | None = None  # how to give the method more capacity, for a diagnosis of underfitting
    checks: Callable[[LoadedSpec], Iterator[Diagnostic]] | None = None  # checks on the spec for this method alone
    model_check: Callable[[Any, ModelInfo], tuple[str, str, str] | None] | None = None  # (key, message, hint)
    plan_check: Callable[[LoadedSpec, Any], Iterator[Diagnostic]] | None = None  # checks on the resolved plan
    evaluates: bool = True  # evaluates the validation split during training (eval_steps)
    support: tuple[str, ...] = ()  # support files under templates/ its template includes besides SCRIPT_SUPPORT
    starter: dict[str, Any] | None = None  # keys without a default, as `ftc init` writes them (GRPO's rewards)

    def describe(self, plan: MethodPlan) -> str:
        """How `ftc plan` names the method; a method whose adapter is a choice says which it is."""
        if "adapter" not in self.spec.model_fields:
            return self.words
        return self.words + (", with a LoRA adapter" if plan.produces_adapter else ", updating every weight")

    def usual_learning_rates(self, table: Any) -> tuple[float, float] | None:
        """The usual learning-rate range for this table (for some methods it depends on the adapter)."""
        usual = self.learning_rate_range
        return usual(table) if callable(usual) else usual

    @property
    def templates(self) -> tuple[str, ...]:
        """Every template file the generated script is rendered from."""
        return (self.template, *SCRIPT_SUPPORT, *self.support)
