"""The method registry: every training method ftc knows, each declared once in its own module.

Adding a method is a module here (its spec table, plan entry, resolve function and MethodDef), its template under
templates/, its tests and its docs. The spec's `[method]` union, the plan's `method` union, validation's hints, the
resolver, the hardware planner and the build all read `METHODS`.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from ftc.compiler.methods.adalora import ADALORA
from ftc.compiler.methods.base import MethodDef, MethodPlan, ResolveContext
from ftc.compiler.methods.dpo import DPO, Dpo
from ftc.compiler.methods.full import FULL, Full
from ftc.compiler.methods.ia3 import IA3
from ftc.compiler.methods.kto import KTO
from ftc.compiler.methods.lora import DEFAULT_TARGETS, LORA, Lora, LoraFields
from ftc.compiler.methods.orpo import ORPO
from ftc.compiler.methods.prompt import P_TUNING, PREFIX_TUNING, PROMPT_TUNING
from ftc.compiler.methods.qlora import QLORA, Qlora
from ftc.compiler.methods.reward import REWARD
from ftc.compiler.methods.rl import GRPO, RLOO
from ftc.compiler.methods.vera import VERA

METHODS: dict[str, MethodDef] = {
    m.kind: m for m in (FULL, LORA, QLORA, IA3, ADALORA, VERA, PROMPT_TUNING, P_TUNING, PREFIX_TUNING, DPO, ORPO, KTO, REWARD, GRPO, RLOO)
}
METHOD_KINDS = tuple(METHODS)

# Methods the guide (or a user coming from another tool) names that ftc does not offer, each with the reason and
# the nearest methods it has. ftc does not imitate a method it cannot run with a well-kept library.
UNAVAILABLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "adapter": (
        "bottleneck adapter layers (Houlsby et al. 2019) are not in peft, and the `adapters` library that has them "
        "requires transformers 4, which ftc's pins exclude",
        ("ia3", "lora", "prefix_tuning"),
    ),
    "adaption_prompt": (
        "LLaMA-Adapter (peft's AdaptionPromptConfig) fails inside trl's SFTTrainer: the model's output has no "
        "log_probs",
        ("prefix_tuning", "prompt_tuning"),
    ),
    "ppo": (
        "PPO was removed from trl (1.x); GRPO and RLOO optimise a policy against a reward model or declared rewards "
        "without PPO's value model",
        ("grpo", "rloo", "dpo"),
    ),
}
UNAVAILABLE["adapters"] = UNAVAILABLE["houlsby"] = UNAVAILABLE["bottleneck"] = UNAVAILABLE["adapter"]
UNAVAILABLE["llama_adapter"] = UNAVAILABLE["adaption_prompt"]

# The [method] table and the plan's method entry: discriminated unions on `kind`, in registry order.
Method = Annotated[Union[tuple(m.spec for m in METHODS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]
AnyMethodPlan = Annotated[Union[tuple(m.plan for m in METHODS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]



__all__ = [
    "DEFAULT_TARGETS",
    "METHODS",
    "METHOD_KINDS",
    "AnyMethodPlan",
    "Dpo",
    "Full",
    "Lora",
    "LoraFields",
    "Method",
    "MethodDef",
    "MethodPlan",
    "UNAVAILABLE",
    "Qlora",
    "ResolveContext",
]
