"""kind = "kto": Kahneman-Tversky Optimization on unpaired examples, each a prompt, one completion and a label
(desirable or not), with trl's KTOTrainer, with a LoRA adapter or on every weight.

Per example trl runs four forwards (trl/trainer/kto_trainer.py, `_compute_loss`): the policy on the completion
(with gradients) and on a mismatched completion of another example of the micro batch (the KL estimate, without),
then the reference on both. So the plan counts two sequences per example and a reference forward; the KL sequence
keeps no activations for the backward pass, so the memory estimate errs high.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from ftc.compiler.data.read import Record, iter_records
from ftc.compiler.methods.base import MethodDef, ResolveContext
from ftc.compiler.methods.dpo import adapter_arguments, check_preference
from ftc.compiler.methods.lora import LoraFields, LoraPlanFields, check_targets

# trl's KTO script (trl/scripts/kto.py) trains with learning_rate 5e-7, on every weight and with QLoRA alike, and
# says "the optimal configuration for KTO will be similar to that of DPO"; trl's DPO script (trl/scripts/dpo.py) uses
# 5e-7 on every weight and 5e-6 with LoRA, and the KTO docs add that adapters "typically use a higher learning rate
# than full fine-tuning" (https://huggingface.co/docs/trl/kto_trainer). KTOConfig's default is 1e-6.
LEARNING_RATE = {"lora": 5e-6, "none": 5e-7}
LEARNING_RATE_RANGE = {"lora": (5e-7, 5e-5), "none": (1e-7, 5e-6)}

# The KTO paper (https://huggingface.co/papers/2402.01306, section 4.2) keeps
# desirable_weight x desirable examples / (undesirable_weight x undesirable examples) in [1, 4/3]; trl warns
# outside it (KTOTrainer._prepare_dataset).
BALANCE = (1.0, 4 / 3)


class Kto(LoraFields):
    kind: Literal["kto"] = Field(
        description="Kahneman-Tversky Optimization on unpaired examples, each labelled desirable or not (trl)."
    )
    adapter: Literal["lora", "none"] = Field(
        default="lora",
        description="'lora' trains a LoRA adapter (the LoRA keys apply); 'none' updates every weight.",
    )
    beta: float = Field(
        default=0.1, gt=0.0, le=10.0, description="Strength of the pull towards the reference model."
    )
    desirable_weight: float = Field(
        default=1.0, gt=0.0, le=100.0, description="Weight of the loss on desirable examples (label true)."
    )
    undesirable_weight: float = Field(
        default=1.0, gt=0.0, le=100.0, description="Weight of the loss on undesirable examples (label false)."
    )
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        default="kto",
        description=(
            "KTO loss variant, as trl names it: 'kto' (with the KL estimate) or 'apo_zero_unpaired' (without it, "
            "for completions better than the model's own)."
        ),
    )
    reference: str = Field(
        default="base",
        min_length=1,
        description=(
            "The reference model: 'base' (the base model; with a LoRA adapter trl disables the adapter "
            "instead of loading a copy) or the path of another model."
        ),
    )


class KtoPlan(LoraPlanFields):
    kind: Literal["kto"]
    beta: float
    desirable_weight: float
    undesirable_weight: float
    loss_type: str
    reference: str

    sequences_per_example: ClassVar[int] = 2  # the completion and the mismatched one of the KL estimate
    reference_forward: ClassVar[bool] = True


def _resolve(method: Kto, ctx: ResolveContext) -> KtoPlan:
    return KtoPlan(
        kind="kto",
        **adapter_arguments(method, ctx),
        beta=method.beta,
        desirable_weight=method.desirable_weight,
        undesirable_weight=method.undesirable_weight,
        loss_type=method.loss_type,
        reference=method.reference,
    )


def _checks(loaded: Any) -> Iterator[Any]:
    spec = loaded.spec
    method = spec.method
    yield from check_preference(loaded, "KTO")
    micro = spec.training.micro_batch_size
    if method.loss_type == "kto" and micro == 1:
        yield loaded.diag(
            "training.micro_batch_size",
            "KTO estimates its KL term from the other examples of a micro batch, so micro_batch_size must be at least 2",
            'raise micro_batch_size (batch_size must stay a multiple of it), or set loss_type = "apo_zero_unpaired", which has no KL term',
            near=("training.batch_size",),
        )
    targets = method.target_modules
    if method.adapter == "lora" and isinstance(targets, list) and "lm_head" in targets:
        yield loaded.diag(
            f"method.target_modules.{targets.index('lm_head')}",
            "trl's KTO computes log-probabilities from lm_head's weight directly: an adapter on lm_head would never train",
            "remove lm_head from target_modules (modules_to_save = [\"lm_head\"] trains it in full)",
        )
    yield from _check_balance(loaded)


def _check_balance(loaded: Any) -> Iterator[Any]:
    """Warn, as trl does, when the weights do not balance the desirable and undesirable examples of the train file."""
    method = loaded.spec.method
    try:
        path = loaded.resolve(loaded.spec.data.train)
        labels = [item.value.get("label") for item in iter_records(path) if isinstance(item, Record) and isinstance(item.value, dict)]
    except (OSError, RuntimeError, ValueError):  # an unreadable file is data.train's diagnostic
        return
    good, bad = sum(label is True for label in labels), sum(label is False for label in labels)
    if good + bad == 0:  # not unpaired data: data.train's diagnostic
        return
    near = ("method.undesirable_weight", "method.kind")
    if not good or not bad:
        what, other = ("desirable", "undesirable") if good else ("undesirable", "desirable")
        yield loaded.diag("method.desirable_weight", f"every example in {loaded.spec.data.train} is {what}: KTO has nothing {other} to contrast them with", f"add {other} examples (label {str(not good).lower()}); trl's docs advise a conservative learning rate with only undesirable ones", severity="warning", near=near)
        return
    ratio = method.desirable_weight * good / (method.undesirable_weight * bad)
    low, high = BALANCE
    if not low <= ratio <= high:
        fitting = method.undesirable_weight * bad / good
        yield loaded.diag(
            "method.desirable_weight",
            f"{good} desirable and {bad} undesirable examples, weighted {method.desirable_weight:g} and {method.undesirable_weight:g}: "
            f"desirable_weight x desirable / (undesirable_weight x undesirable) is {ratio:.2f}, and the KTO paper keeps it between 1 and 4/3",
            f"set desirable_weight between {fitting:.3g} and {fitting * high:.3g}",
            severity="warning",
            near=near,
        )


def _model_check(method: Kto, info: Any) -> tuple[str, str, str] | None:
    return check_targets(method, info) if method.adapter == "lora" else None


def _plan_check(loaded: Any, plan: Any) -> Iterator[Any]:
    """micro_batch_size = "auto" is chosen by the planner, which may fit only 1 on a small GPU."""
    if plan.method.loss_type == "kto" and plan.training.micro_batch_size < 2 and loaded.spec.training.micro_batch_size == "auto":
        yield loaded.diag(
            "training.micro_batch_size",
            "the planner fits only 1 example per micro batch, and KTO estimates its KL term from the others of its micro batch",
            'set micro_batch_size = 2 or more with a GPU that holds it (or gradient_checkpointing = true), or loss_type = "apo_zero_unpaired"',
        )


KTO = MethodDef(
    kind="kto",
    spec=Kto,
    plan=KtoPlan,
    template="preference.py.j2",
    trains_on="unpaired",
    words="KTO on examples labelled desirable or not",
    key_words="a KTO setting",
    resolve=_resolve,
    learning_rate=lambda method: LEARNING_RATE[method.adapter],
    learning_rate_range=lambda method: LEARNING_RATE_RANGE[method.adapter],
    token_loss=False,  # the KTO loss is a sigmoid of reward log-ratios: no loss level means "high"
    packing=False,
    checks=_checks,
    model_check=_model_check,
    plan_check=_plan_check,
)
