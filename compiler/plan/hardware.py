"""The hardware planner: the GPU memory a run needs, whether it fits the GPU the spec names, the cheapest change
when it does not, and about how long the run takes. From the model's config and the measured token counts
alone: no weights are loaded and no GPU is needed.

Memory per device, in bytes (N weights in the base model, T trainable, b bytes per weight as loaded):

- weights: N x b. QLoRA keeps the linear layers in 4 bits plus their quantization constants (an fp32 absmax per
  64 weights: 4.5 bits; with double quantization an 8-bit absmax plus an fp32 constant per 256 blocks: 4.127 bits)
  and the rest in fp32 (peft's prepare_model_for_kbit_training upcasts it), plus one dequantized matrix at a
  time. LoRA adapters are fp32 (4 B). DPO without an adapter adds a frozen reference model (N x b).
- gradients: T x the bytes of a trainable weight. DDP keeps a second copy in its communication buckets.
- optimizer: AdamW keeps two moments in the dtype of the weights it updates (torch allocates them like the
  parameter: 4 B per bf16 weight, 8 B per fp32 one); bitsandbytes' 32-bit AdamW 8 B; 8-bit AdamW, paged or
  not, 2 B; SGD none; Adafactor fp32 row and column statistics.
- master_weights: DeepSpeed in bf16/fp16 holds the trainable weights in 16 bits plus an fp32 master copy
  (4 B); accelerate's FSDP upcasts them to fp32 instead. Either way full fine-tuning is 16 B per weight there,
  against 8 B for bf16 weights without them.
- activations, per token and layer in 16 bits: 20h + 4kv + 8i bytes (h the hidden size, kv the key/value
  width, i the MLP width): the inputs the two RMSNorms save (fp32 and 16-bit), q, k, v and the attention output,
  and the SwiGLU MLP's four i-wide tensors. Eager attention adds the softmax probabilities, heads x seq x (4 + 2)
  bytes; SDPA and flash attention keep no seq x seq matrix. LoRA saves each adapter's input (plus a 1-byte
  dropout mask when lora_dropout > 0). Gradient checkpointing keeps only each layer's input (2h) and recomputes
  one layer at a time. fp32 training doubles the 16-bit sizes.
- logits: tokens x vocab x 12 B: the 16-bit logits, their fp32 copy for the loss, and the gradients of both.
- overhead: 1 GiB on CUDA for the context, cuBLAS workspaces and allocator slack; 0.5 GiB more for NCCL.

Tokens per forward pass are micro_batch_size x max_length (x 2 for DPO's chosen and rejected): always so with
packing, and the worst batch without it. With packing and any attention but flash attention, the generated
script passes the packed rows one at a time (and accumulates the micro batch): trl flattens a micro batch into
one row, over which SDPA and eager attention would build one dense mask. Then a forward pass is max_length tokens. FSDP and ZeRO-3 divide weights, gradients, optimizer state and master
weights by the devices and gather two layers (and the unwrapped embeddings and head) at a time in 16 bits;
ZeRO-2 divides gradients, optimizer state and master weights; DDP divides nothing. Activations never divide.

Time: FLOPs per token = 6M for full fine-tuning and 4M + 6A for (Q)LoRA (M: the weights of every matmul, the
output head included; A: the adapters; the frozen base needs gradients through its activations but none for its
weights), plus attention 12 x layers x heads x head_dim x seq (forward 4, backward 8). Gradient checkpointing
adds one forward (2M + 4 x layers x heads x head_dim x seq), and so does DPO's reference model. Seconds =
tokens x FLOPs per token / (devices x peak x utilization), with utilization assumed 40% for full fine-tuning, 35%
for LoRA, 25% for QLoRA (which dequantizes on every matmul); communication between devices is not counted.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftc.compiler.diagnostics import Diagnostic
from ftc.compiler.plan.gpus import GPUS
from ftc.compiler.plan.modelinfo import ModelInfo, lora_trainable
from ftc.compiler.spec import Hardware, Qlora, Spec
from ftc.compiler.spec.method import DEFAULT_TARGETS
from ftc.compiler.spec.validate import LoadedSpec

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BITS = {True: 4 + 8 / 64 + 32 / (64 * 256), False: 4 + 32 / 64}  # with / without double quantization
OVERHEAD_GIB = 1.0
NCCL_GIB = 0.5
LOGIT_BYTES = 12
SAFE_SHARE = 0.9  # a plan "fits" within 90% of the GPU's memory; up to 100% it is "tight"
UTILIZATION = {"full": 0.40, "lora": 0.35, "qlora": 0.25}
SHARD_WEIGHTS = ("fsdp", "deepspeed_zero3")
SHARD_STATE = ("fsdp", "deepspeed_zero2", "deepspeed_zero3")
MAX_GPUS = 64  # hardware.gpus' bound
PARTS = ("weights", "reference_model", "master_weights", "gradients", "optimizer", "gathered_weights", "activations", "logits", "overhead")
OPTIONAL_PARTS = ("reference_model", "master_weights", "gathered_weights")  # in the lock only when not zero
PART_WORDS = {"reference_model": "reference model", "master_weights": "fp32 master weights", "gathered_weights": "gathered layers"}


@dataclass(frozen=True)
class Workload:
    """What the memory and time estimates depend on, resolved for one device type."""

    info: ModelInfo
    device: str  # "cuda" | "cpu"
    kind: str  # full | lora | qlora | dpo
    adapter: str  # lora | none
    trainable: int
    weight_dtype: str
    precision: str
    optim: str
    double_quant: bool
    lora_dropout: float
    adapted_features: int  # in_features summed over the adapted linear layers: what the adapters' inputs hold
    attention: str  # sdpa | eager | flash_attention_2
    packing: bool
    max_length: int
    micro_batch_size: int
    checkpointing: bool
    devices: int
    strategy: str

    @property
    def sequences_per_example(self) -> int:
        return 2 if self.kind == "dpo" else 1

    @property
    def rows_per_forward(self) -> int:
        """As the generated script decides: packed rows go one at a time unless the attention is varlen (flash)."""
        return 1 if self.packing and self.kind != "dpo" and "flash" not in self.attention else self.micro_batch_size

    @property
    def tokens_per_forward(self) -> int:
        return self.rows_per_forward * self.max_length * self.sequences_per_example

    @property
    def utilization_kind(self) -> str:
        if self.kind == "qlora":
            return "qlora"
        return "lora" if self.adapter == "lora" else "full"


@dataclass(frozen=True)
class Target:
    """The GPU the spec describes: a listed type, or a memory size and peak given by hand."""

    name: str | None
    memory_gib: float | None
    tflops: float | None

    @property
    def label(self) -> str:
        return self.name or "GPU"


@dataclass(frozen=True)
class Suggestion:
    edits: dict[str, Any]  # dotted spec key -> new value
    workload: Workload
    peak_gib: float

    def words(self) -> str:
        return " and ".join(f"{key} = {_toml(value)}" for key, value in self.edits.items())


# -- building the workload --------------------------------------------------------------------------


def adapted_features(info: ModelInfo, targets: list[str] | str | tuple[str, ...]) -> int:
    """in_features summed over the linear layers LoRA adapts (peft's suffix matching, as lora_trainable)."""
    if targets == "all-linear":
        return sum(i for i, _ in info.linear_shapes.values())
    return sum(i for name, (i, _) in info.linear_shapes.items() if any(name == t or name.endswith("." + t) for t in targets))


def make_workload(
    spec: Spec,
    info: ModelInfo,
    *,
    device: str,
    weight_dtype: str,
    precision: str,
    optim: str,
    trainable: int,
    micro_batch_size: int,
    devices: int,
    strategy: str,
) -> Workload:
    method = spec.method
    adapter = "lora" if method.kind in ("lora", "qlora") or (method.kind == "dpo" and method.adapter == "lora") else "none"
    attention = spec.model.attn_implementation
    return Workload(
        info=info,
        device=device,
        kind=method.kind,
        adapter=adapter,
        trainable=trainable,
        weight_dtype=weight_dtype,
        precision=precision,
        optim=optim,
        double_quant=isinstance(method, Qlora) and method.bnb_4bit_use_double_quant,
        lora_dropout=method.lora_dropout if adapter == "lora" else 0.0,
        adapted_features=adapted_features(info, method.target_modules) if adapter == "lora" else 0,
        attention="sdpa" if attention == "auto" else attention,
        packing=bool(spec.data.packing) if spec.data.packing is not None else method.kind != "dpo",  # as the plan resolves it
        max_length=spec.data.max_length,
        micro_batch_size=micro_batch_size,
        checkpointing=spec.training.gradient_checkpointing,
        devices=devices,
        strategy=strategy,
    )


def workload_of_plan(spec: Spec, info: ModelInfo, plan: dict[str, Any]) -> Workload:
    """The workload a resolved plan describes, for the device its estimate is for."""
    device = plan["estimates"]["device"]
    return make_workload(
        spec,
        info,
        device=device,
        weight_dtype=plan["model"]["dtype"][device],
        precision=plan["hardware"]["precision"][device],
        optim=plan["training"]["optim"][device],
        trainable=plan["method"]["trainable_params"],
        micro_batch_size=plan["training"]["micro_batch_size"],
        devices=plan["hardware"]["devices"],
        strategy=plan["hardware"]["strategy"],
    )


def target_of(hw: Hardware) -> Target | None:
    """The GPU to plan for; None on the CPU or when the spec describes none."""
    if hw.accelerator == "cpu":
        return None
    if hw.gpu_type is not None:
        gpu = GPUS[hw.gpu_type]
        return Target(gpu.name, gpu.memory_gib, gpu.bf16_tflops)
    if hw.gpu_memory_gb is None and hw.gpu_tflops is None:
        return None
    return Target(None, hw.gpu_memory_gb, hw.gpu_tflops)


# -- memory -----------------------------------------------------------------------------------------


def memory_parts(w: Workload) -> dict[str, float]:
    """Peak memory per device in bytes, by part (see the module's docstring for each formula)."""
    info = w.info
    b = DTYPE_BYTES[w.weight_dtype]
    mixed = w.precision in ("bf16", "fp16")
    act = 2 if mixed else 4
    n = info.total_params
    linear = sum(i * o for i, o in info.linear_shapes.values())
    largest = max((i * o for i, o in info.linear_shapes.values()), default=0)

    held = 4 if w.adapter == "lora" else b  # bytes of a trainable weight as the model holds it
    master = 0
    if mixed and w.strategy.startswith("deepspeed"):
        held, master = 2, 4
    elif mixed and w.strategy == "fsdp":
        held = 4
    if w.kind == "qlora":
        base = linear * NF4_BITS[w.double_quant] / 8 + (n - linear) * 4 + largest * 2
    elif w.adapter == "lora":
        base = n * b
    else:
        base = 0  # full fine-tuning: the base weights are the trainable ones
    weights = base + w.trainable * held
    reference = n * b if w.kind == "dpo" and w.adapter == "none" else 0
    gradients = w.trainable * held * (2 if w.strategy == "ddp" and w.devices > 1 else 1)
    state = 4 if master or (mixed and w.strategy == "fsdp") else held
    optimizer = w.trainable * _optimizer_bytes(w, state, linear)

    weight_shards = w.devices if w.strategy in SHARD_WEIGHTS else 1
    state_shards = w.devices if w.strategy in SHARD_STATE else 1
    gathered = 0.0
    if weight_shards > 1:
        gathered = (2 * linear / info.num_layers + (n - linear)) * 2

    h, layers = info.hidden_size, info.num_layers
    kv = info.num_key_value_heads * info.head_dim
    per_layer = (20 * h + 4 * kv + 8 * info.intermediate_size) * act / 2
    if w.attention == "eager":
        per_layer += info.num_attention_heads * w.max_length * (4 + act)
    adapter_inputs = w.adapted_features * (act + (1 if w.lora_dropout > 0 else 0))
    head = (4 + act) * h  # the final norm
    if w.checkpointing:
        per_token = layers * act * h + per_layer + adapter_inputs / layers + head
    else:
        per_token = layers * per_layer + adapter_inputs + head
    tokens = w.tokens_per_forward
    overhead = (OVERHEAD_GIB + (NCCL_GIB if w.devices > 1 else 0)) * GIB if w.device == "cuda" else 0
    return {
        "weights": weights / weight_shards,
        "reference_model": reference / weight_shards,
        "master_weights": w.trainable * master / state_shards,
        "gradients": gradients / state_shards,
        "optimizer": optimizer / state_shards,
        "gathered_weights": gathered,
        "activations": tokens * per_token,
        "logits": tokens * info.vocab_size * LOGIT_BYTES,
        "overhead": overhead,
    }


def _optimizer_bytes(w: Workload, state: int, linear: int) -> float:
    """Optimizer state per trainable weight, in bytes."""
    if w.optim in ("adamw_torch", "adamw_torch_fused"):
        return 2 * state
    if w.optim == "paged_adamw_32bit":
        return 8
    if w.optim in ("adamw_bnb_8bit", "paged_adamw_8bit"):
        return 2
    if w.optim == "adafactor":  # fp32 row and column statistics for matrices, a full one for the rest
        if w.adapter == "lora" or not w.trainable:
            return 4
        rows_cols = sum(i + o for i, o in w.info.linear_shapes.values())
        return 4 * (rows_cols + w.info.total_params - linear) / w.trainable
    return 0  # sgd (no momentum)


def peak_gib(w: Workload) -> float:
    return round(sum(memory_parts(w).values()) / GIB, 2)


def fits(w: Workload, target: Target) -> bool:
    return target.memory_gib is not None and peak_gib(w) <= SAFE_SHARE * target.memory_gib


def verdict(peak: float, target: Target | None, device: str) -> str:
    if device != "cuda":
        return "not applicable"
    if target is None or target.memory_gib is None:
        return "unknown"
    if peak <= SAFE_SHARE * target.memory_gib:
        return "fits"
    return "tight" if peak <= target.memory_gib else "does not fit"


def breakdown(w: Workload) -> str:
    """'weights 0.25 + gradients 0.02 + ... = 4.71 GiB', the parts that are not zero."""
    parts = memory_parts(w)
    shown = " + ".join(f"{PART_WORDS.get(name, name)} {parts[name] / GIB:.2f}" for name in PARTS if parts[name])
    return f"{shown} = {peak_gib(w):.2f} GiB"


def conditions(w: Workload) -> str:
    """The settings the estimate depends on most, in words."""
    per = f"micro batch {w.micro_batch_size} x {w.max_length} tokens" + (" x 2 (chosen, rejected)" if w.kind == "dpo" else "")
    if w.rows_per_forward != w.micro_batch_size:
        per += f" (packed rows one at a time with {w.attention} attention)"
    ckpt = "gradient checkpointing" if w.checkpointing else "no gradient checkpointing"
    where = f"{w.devices} devices, {w.strategy}" if w.devices > 1 else "1 device"
    return f"{per}, {ckpt}, {w.attention} attention, optimizer {w.optim}, {where}"


# -- choosing and suggesting ------------------------------------------------------------------------


def micro_batch_candidates(batch_size: int, devices: int, at_most: int) -> list[int]:
    """Micro batches that divide the batch per device evenly, largest first."""
    if batch_size % devices:
        return []
    per_device = batch_size // devices
    return [m for m in range(min(per_device, at_most), 0, -1) if per_device % m == 0]


def choose_micro_batch(w: Workload, target: Target, batch_size: int) -> int | None:
    """The largest micro batch that divides the batch per device and fits the target; None if not even 1 fits."""
    for m in micro_batch_candidates(batch_size, w.devices, batch_size):
        if fits(dataclasses.replace(w, micro_batch_size=m), target):
            return m
    return None


Change = tuple[dict[str, Any], Callable[[Workload], Workload]]


def _changes(spec: Spec, w: Workload) -> list[Change]:
    """Changes to the spec that lower the peak, cheapest first (smaller micro batches come with each)."""
    hw = spec.hardware
    changes: list[Change] = []
    if not w.checkpointing:
        changes.append(({"training.gradient_checkpointing": True}, lambda x: dataclasses.replace(x, checkpointing=True)))
    if w.kind in ("full", "lora") and w.strategy != "deepspeed_zero3":
        changes.append(({"method.kind": "qlora"}, lambda x: _as_qlora(x, spec)))
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
    optim = "paged_adamw_8bit" if spec.training.optim == "auto" else w.optim
    return dataclasses.replace(w, kind="qlora", adapter="lora", trainable=trainable, adapted_features=features, lora_dropout=dropout, double_quant=True, optim=optim)


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


# -- the lock's estimates -----------------------------------------------------------------------------


def flops_per_token(w: Workload, context: int) -> int:
    """Training FLOPs per token processed (see the module's docstring)."""
    info = w.info
    matmul = sum(i * o for i, o in info.linear_shapes.values()) + info.vocab_size * info.hidden_size
    attention = info.num_layers * info.num_attention_heads * info.head_dim * context
    flops = (4 * matmul + 6 * w.trainable) if w.adapter == "lora" else 6 * matmul
    flops += 12 * attention
    if w.checkpointing:
        flops += 2 * matmul + 4 * attention
    if w.kind == "dpo":
        flops += 2 * matmul + 4 * attention
    return int(flops)


def time_estimate(w: Workload, target: Target | None, plan: dict[str, Any]) -> dict[str, Any] | None:
    """Tokens, FLOPs and seconds for the whole run on the target; None without a peak to divide by."""
    if w.device != "cuda" or target is None or target.tflops is None or w.precision == "fp32":
        return None
    t, d = plan["training"], plan["data"]
    train = d["splits"]["train"]
    tokens_per_epoch = train["tokens"] * w.sequences_per_example
    context = d["max_length"] if d["packing"] else max(1, round(train["tokens"] / max(1, train["examples"])))
    tokens = round(tokens_per_epoch * t["max_steps"] / t["steps_per_epoch"])
    per_token = flops_per_token(w, context)
    utilization = UTILIZATION[w.utilization_kind]
    seconds = tokens * per_token / (w.devices * target.tflops * 1e12 * utilization)
    return {
        "tokens": tokens,
        "attention_context": context,
        "flops_per_token": per_token,
        "peak_tflops": target.tflops,
        "utilization": utilization,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / t["max_steps"], 3),
    }


def estimates(w: Workload, target: Target | None, plan: dict[str, Any]) -> dict[str, Any]:
    """The lock's `estimates`: memory per device with its parts, the fit verdict, and the run's time."""
    parts = memory_parts(w)
    peak = peak_gib(w)
    memory = target.memory_gib if target is not None else None
    judged = verdict(peak, target, w.device)
    return {
        "device": w.device,
        "peak_memory_gib": peak,
        "breakdown_gib": {name: round(parts[name] / GIB, 3) for name in PARTS if parts[name] or name not in OPTIONAL_PARTS},
        "tokens_per_epoch": plan["data"]["splits"]["train"]["tokens"],
        "tokens_per_forward": w.tokens_per_forward,
        "attention": w.attention,
        "gpu": None if target is None else {"type": target.name, "memory_gib": target.memory_gib, "peak_tflops": target.tflops},
        "verdict": judged,
        "headroom_gib": round(memory - peak, 2) if memory is not None and judged != "not applicable" else None,
        "time": time_estimate(w, target, plan),
    }


# -- diagnostics ------------------------------------------------------------------------------------


def fit_diagnostics(loaded: LoadedSpec, plan: dict[str, Any], info: ModelInfo) -> list[Diagnostic]:
    """An error when the plan's estimated peak exceeds the GPU's memory, a warning when it is within 10% of it."""
    spec = loaded.spec
    e = plan["estimates"]
    target = target_of(spec.hardware)
    if e["verdict"] not in ("tight", "does not fit") or target is None or target.memory_gib is None:
        return []
    w = workload_of_plan(spec, info, plan)
    hw = spec.hardware
    key = "hardware.gpu_type" if hw.gpu_type is not None else "hardware.gpu_memory_gb"
    memory = f"the {target.label}'s {target.memory_gib:g} GiB" + (f" (each of {w.devices})" if w.devices > 1 else "")
    detail = f"{breakdown(w)} per device ({conditions(w)})"
    hint = fix_hint(spec, w, target)
    if spec.training.micro_batch_size == "auto":
        message = f'micro_batch_size = "auto": even a micro batch of 1 needs an estimated {e["peak_memory_gib"]:.2f} GiB per device, more than {SAFE_SHARE:.0%} of {memory}'
        return [_with_detail(loaded.diag("training.micro_batch_size", message, hint), detail)]
    if e["verdict"] == "tight":
        message = f"the estimated peak of {e['peak_memory_gib']:.2f} GiB per device is within {1 - SAFE_SHARE:.0%} of {memory}: little room for the estimate's error"
        return [_with_detail(loaded.diag(key, message, hint, severity="warning", value=False), detail)]
    message = f"does not fit: the estimated peak of {e['peak_memory_gib']:.2f} GiB per device exceeds {memory}"
    return [_with_detail(loaded.diag(key, message, hint, value=True), detail)]


def _with_detail(diag: Diagnostic, detail: str) -> Diagnostic:
    return dataclasses.replace(diag, detail=detail)
