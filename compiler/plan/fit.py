"""Whether a plan fits the GPU its spec names, and the cheapest change to the spec when it does not.

The estimates come from the hardware planner (compiler/plan/hardware.py); this module turns them into the
diagnostics `ftc compile` reports: an error when the peak exceeds the GPU's memory, a warning when it is within
10% of it, each with the smallest set of spec edits that fits (a smaller micro batch, gradient checkpointing, a
lighter method, more GPUs, FSDP) or a bigger listed GPU.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftc.compiler.diagnostics import Diagnostic
from ftc.compiler.methods import DEFAULT_TARGETS, METHODS, Qlora
from ftc.compiler.plan.gpus import GPUS
from ftc.compiler.plan.hardware import (
    MAX_GPUS,
    SAFE_SHARE,
    SHARD_STATE,
    SHARD_WEIGHTS,
    Target,
    Workload,
    adapted_features,
    breakdown,
    conditions,
    fits,
    micro_batch_candidates,
    peak_gib,
    target_of,
    workload_of_plan,
)
from ftc.compiler.plan.modelinfo import ModelInfo, lora_trainable
from ftc.compiler.spec import Spec

if TYPE_CHECKING:
    from ftc.compiler.plan.model import Plan
    from ftc.compiler.spec.validate import LoadedSpec


@dataclass(frozen=True)
class Suggestion:
    edits: dict[str, Any]  # dotted spec key -> new value
    workload: Workload
    peak_gib: float

    def words(self) -> str:
        return " and ".join(f"{key} = {_toml(value)}" for key, value in self.edits.items())



Change = tuple[dict[str, Any], Callable[[Workload], Workload]]


def _changes(spec: Spec, w: Workload) -> list[Change]:
    """Changes to the spec that lower the peak, cheapest first (smaller micro batches come with each)."""
    hw = spec.hardware
    changes: list[Change] = []
    if not w.checkpointing and METHODS[w.kind].plan.gradient_checkpointing:
        changes.append(({"training.gradient_checkpointing": True}, lambda x: dataclasses.replace(x, checkpointing=True)))
    lighter = METHODS[w.kind].lighter
    if lighter == "qlora" and w.strategy != "deepspeed_zero3":
        changes.append(({"method.kind": lighter}, lambda x: _as_qlora(x, spec)))
    if hw.gpus * 2 <= MAX_GPUS:
        edits: dict[str, Any] = {"hardware.gpus": hw.gpus * 2}
        if hw.strategy == "none":
            edits["hardware.strategy"] = "ddp"
        changes.append((edits, lambda x: dataclasses.replace(x, devices=x.devices * 2, strategy=x.strategy if x.strategy in SHARD_STATE else "ddp")))
    if w.strategy not in SHARD_WEIGHTS:
        changes.append(({"hardware.strategy": "fsdp"}, lambda x: dataclasses.replace(x, strategy="fsdp")))
    return changes


def _as_qlora(w: Workload, spec: Spec) -> Workload:
    """The workload with a 4-bit base: LoRA keeps its adapters; full fine-tuning gets QLoRA's default adapters."""
    trainable, features, dropout = w.trainable, w.adapted_features, w.lora_dropout
    if w.adapter == "none":
        fields = Qlora.model_fields
        targets = list(DEFAULT_TARGETS)
        trainable = lora_trainable(w.info, targets, fields["r"].default)[0]
        features = adapted_features(w.info, targets)
        dropout = fields["lora_dropout"].default
    optim = METHODS["qlora"].cuda_optim if spec.training.optim == "auto" else w.optim
    return dataclasses.replace(
        w, kind="qlora", adapter="lora", trainable=trainable, adapted_features=features,
        lora_dropout=dropout, double_quant=True, optim=optim,
    )


def suggest(spec: Spec, w: Workload, target: Target) -> Suggestion | None:
    """The cheapest change that makes the plan fit the target, with its estimate; None when nothing does.

    Cheapest means: the least costly kind of change (a smaller micro batch with more accumulation, then gradient
    checkpointing, QLoRA, twice the GPUs, FSDP), then the fewest changes, then the largest micro batch.
    """
    t = spec.training
    auto = t.micro_batch_size == "auto"
    changes = _changes(spec, w)
    subsets = sorted(
        (combo for k in range(len(changes) + 1) for combo in itertools.combinations(range(len(changes)), k)),
        key=lambda combo: (max(combo, default=-1), len(combo), combo),
    )
    for combo in subsets:
        changed, edits = w, {}
        for i in combo:
            change_edits, apply = changes[i]
            edits.update(change_edits)
            changed = apply(changed)
        if changed.strategy != "none" and changed.devices == 1:
            continue
        ceiling = t.batch_size if auto else w.micro_batch_size
        for m in micro_batch_candidates(t.batch_size, changed.devices, ceiling):
            candidate = dataclasses.replace(changed, micro_batch_size=m)
            if (combo or m != w.micro_batch_size) and fits(candidate, target):
                more = dict(edits)
                if m != w.micro_batch_size and not auto:
                    more = {"training.micro_batch_size": m, **edits}
                if t.gradient_accumulation_steps is not None and (m != w.micro_batch_size or changed.devices != w.devices):
                    more["training.gradient_accumulation_steps"] = t.batch_size // (m * changed.devices)
                return Suggestion(more, candidate, peak_gib(candidate))
    return None


def bigger_gpu(w: Workload) -> str | None:
    """The smallest listed GPU that this workload fits, unchanged."""
    for gpu in sorted(GPUS.values(), key=lambda g: g.memory_gib):
        if fits(w, Target(gpu.name, gpu.memory_gib, gpu.bf16_tflops)):
            return f"{gpu.name} ({gpu.memory_gib:g} GiB)"
    return None


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def fix_hint(spec: Spec, w: Workload, target: Target) -> str:
    """The hint of a 'does not fit' diagnostic: the cheapest change that fits, and what it is estimated at."""
    found = suggest(spec, w, target)
    limit = f"{SAFE_SHARE * target.memory_gib:.2f} GiB ({SAFE_SHARE:.0%} of {target.memory_gib:g})"  # type: ignore[operator]
    if found is not None:
        s = found.workload
        batch = f"; gradient accumulation {spec.training.batch_size // (s.micro_batch_size * s.devices)}, batch_size {spec.training.batch_size} unchanged"
        return f"cheapest change that fits: {found.words()} -> estimated {found.peak_gib:.2f} GiB per device, within {limit}{batch}"
    bigger = bigger_gpu(w)
    if bigger is not None:
        return f"no change ftc knows fits the {target.label}; as planned it fits a GPU with more memory: {bigger}"
    return f"no change ftc knows fits the {target.label}, nor does any listed GPU; use a smaller model or shorter max_length"


# -- diagnostics ------------------------------------------------------------------------------------


def fit_diagnostics(loaded: LoadedSpec, plan: Plan, info: ModelInfo) -> list[Diagnostic]:
    """What the plan asks of the model and the machine: a warning when max_length runs past the model's context;
    an error when the plan's estimated peak exceeds the GPU's memory, a warning when it is within 10% of it."""
    return _context(loaded, info) + _memory(loaded, plan, info)


def _context(loaded: LoadedSpec, info: ModelInfo) -> list[Diagnostic]:
    context, max_length = info.max_position_embeddings, loaded.spec.data.max_length
    if context is None or max_length <= context:
        return []
    message = f"max_length = {max_length} is longer than the {context} positions {info.architecture} was trained on"
    hint = f"examples that long run past the model's context; lower max_length to {context} or less"
    return [loaded.diag("data.max_length", message, hint, severity="warning")]


def _memory(loaded: LoadedSpec, plan: Plan, info: ModelInfo) -> list[Diagnostic]:
    spec = loaded.spec
    e = plan.estimates
    target = target_of(spec.hardware)
    if e.verdict not in ("tight", "does not fit") or target is None or target.memory_gib is None:
        return []
    w = workload_of_plan(plan, info)
    hw = spec.hardware
    key = "hardware.gpu_type" if hw.gpu_type is not None else "hardware.gpu_memory_gb"
    memory = f"the {target.label}'s {target.memory_gib:g} GiB" + (f" (each of {w.devices})" if w.devices > 1 else "")
    detail = f"{breakdown(w)} per device ({conditions(w)})"
    hint = fix_hint(spec, w, target)
    if spec.training.micro_batch_size == "auto":
        message = f'micro_batch_size = "auto": even a micro batch of 1 needs an estimated {e.peak_memory_gib:.2f} GiB per device, more than {SAFE_SHARE:.0%} of {memory}'
        return [_with_detail(loaded.diag("training.micro_batch_size", message, hint), detail)]
    if e.verdict == "tight":
        message = f"the estimated peak of {e.peak_memory_gib:.2f} GiB per device is within {1 - SAFE_SHARE:.0%} of {memory}: little room for the estimate's error"
        return [_with_detail(loaded.diag(key, message, hint, severity="warning", value=False), detail)]
    message = f"does not fit: the estimated peak of {e.peak_memory_gib:.2f} GiB per device exceeds {memory}"
    return [_with_detail(loaded.diag(key, message, hint, value=True), detail)]


def _with_detail(diag: Diagnostic, detail: str) -> Diagnostic:
    return dataclasses.replace(diag, detail=detail)
