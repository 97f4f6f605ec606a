"""The hardware planner: the GPU memory a run needs, whether it fits the GPU the spec names, the cheapest change
when it does not, and about how long the run takes. From the model's config and the measured token counts
alone: no weights are loaded and no GPU is needed.

Memory per device, in bytes (N weights in the base model, T trainable, b bytes per weight as loaded):

- weights: N x b. QLoRA keeps the linear layers in 4 bits plus their quantization constants (an fp32 absmax per
  64 weights: 4.5 bits; with double quantization an 8-bit absmax plus an fp32 constant per 256 blocks: 4.127 bits)
  and the rest in fp32 (peft's prepare_model_for_kbit_training upcasts it), plus one dequantized matrix at a
  time. Adapters (LoRA and the other peft methods) are fp32 (4 B). DPO without an adapter adds a frozen reference model (N x b).
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
- GRPO and RLOO: each prompt of a micro batch is num_generations sequences; a reference copy only when beta > 0
  (and no adapter); the reward models' weights (N_r x b); and the sampling KV cache, tokens x layers x 2 x kv x
  (2 or 4) bytes, counted beside the activations although sampling ends before the backward pass (errs high).

Tokens per forward pass are micro_batch_size x max_length (x 2 for DPO's chosen and rejected): always so with
packing, and the worst batch without it. With packing and any attention but flash attention, the generated
script passes the packed rows one at a time (and accumulates the micro batch): trl flattens a micro batch into
one row, over which SDPA and eager attention would build one dense mask. Then a forward pass is max_length tokens. FSDP and ZeRO-3 divide weights, gradients, optimizer state and master
weights by the devices and gather two layers (and the unwrapped embeddings and head) at a time in 16 bits;
ZeRO-2 divides gradients, optimizer state and master weights; DDP divides nothing. Activations never divide.

Time: FLOPs per token = 6M for full fine-tuning and 4M + 6A with an adapter of any kind (M: the weights of every
matmul, the output head included; A: the trainable parameters, from each method's own count; the frozen base
needs gradients through its activations but none for its weights), plus attention 12 x layers x heads x head_dim x seq (forward 4, backward 8). Gradient checkpointing
adds one forward (2M + 4 x layers x heads x head_dim x seq), and so does DPO's reference model. Seconds =
tokens x FLOPs per token / (devices x peak x utilization), with utilization assumed 40% for full fine-tuning, 35%
for LoRA, 25% for QLoRA (which dequantizes on every matmul); communication between devices is not counted.
GRPO and RLOO add a forward of each reward model (2 N_r per token) and the sampling: steps x batch x
num_generations x max_completion_length tokens (an upper bound) at one forward (2M) each, at
GENERATION_UTILIZATION, since decoding a few sequences at a time is bound by memory bandwidth rather than FLOPs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftc.compiler.methods import METHODS, MethodPlan
from ftc.compiler.methods.base import utilization_of
from ftc.compiler.plan.gpus import GPUS
from ftc.compiler.plan.modelinfo import ModelInfo
from ftc.compiler.spec import Hardware

if TYPE_CHECKING:
    from ftc.compiler.plan.model import DataPlan, Estimates, Plan, TrainingPlan

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BITS = {True: 4 + 8 / 64 + 32 / (64 * 256), False: 4 + 32 / 64}  # with / without double quantization
OVERHEAD_GIB = 1.0
NCCL_GIB = 0.5
LOGIT_BYTES = 12
SAFE_SHARE = 0.9  # a plan "fits" within 90% of the GPU's memory; up to 100% it is "tight"
SHARD_WEIGHTS = ("fsdp", "deepspeed_zero3")
SHARD_STATE = ("fsdp", "deepspeed_zero2", "deepspeed_zero3")
MAX_GPUS = 64  # hardware.gpus' bound
PARTS = (
    "weights", "reference_model", "reward_models", "master_weights", "gradients", "optimizer", "gathered_weights", "activations",
    "logits", "kv_cache", "overhead",
)  # fmt: skip
OPTIONAL_PARTS = ("reference_model", "reward_models", "master_weights", "gathered_weights", "kv_cache")  # in the lock only when not zero
PART_WORDS = {
    "reference_model": "reference model", "reward_models": "reward models", "master_weights": "fp32 master weights",
    "gathered_weights": "gathered layers", "kv_cache": "sampling KV cache",
}  # fmt: skip
GENERATION_UTILIZATION = 0.05  # decoding a few sequences at a time is bound by memory bandwidth, not FLOPs (assumed)


@dataclass(frozen=True)
class Workload:
    """What the memory and time estimates depend on, resolved for one device type."""

    info: ModelInfo
    device: str  # "cuda" | "cpu"
    kind: str  # the method (ftc.compiler.methods), whose plan entry declares what the estimates need
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
    sequences_per_example: int = 1  # DPO's chosen and rejected; GRPO's and RLOO's completions per prompt
    reference_forward: bool = False  # a frozen reference forward each step (DPO, KTO; GRPO and RLOO with beta > 0)
    reward_params: int = 0  # weights of the reward models GRPO and RLOO load beside the policy
    completion_length: int = 0  # GRPO and RLOO: the longest completion sampled (0: the method generates nothing)

    @property
    def _method(self) -> type[MethodPlan]:
        return METHODS[self.kind].plan

    @property
    def quantized(self) -> bool:
        """The base is held in 4 bits."""
        return self._method.quantized_base

    @property
    def reference_copy(self) -> bool:
        """A frozen copy of the base for the reference forward: with an adapter, the base with it off serves."""
        return self.reference_forward and self.adapter == "none"

    @property
    def utilization(self) -> float:
        return utilization_of(self._method, self.adapter)

    @property
    def rows_per_forward(self) -> int:
        """Packed rows go one at a time unless the attention is varlen (flash); the plan records this for the script."""
        return 1 if self.packing and "flash" not in self.attention else self.micro_batch_size

    @property
    def tokens_per_forward(self) -> int:
        return self.rows_per_forward * self.max_length * self.sequences_per_example


@dataclass(frozen=True)
class Target:
    """The GPU the spec describes: a listed type, or a memory size and peak given by hand."""

    name: str | None
    memory_gib: float | None
    tflops: float | None

    @property
    def label(self) -> str:
        return self.name or "GPU"


# -- building the workload --------------------------------------------------------------------------


def adapted_features(info: ModelInfo, targets: list[str] | str | tuple[str, ...]) -> int:
    """in_features summed over the linear layers LoRA adapts (peft's suffix matching, as lora_trainable)."""
    if targets == "all-linear":
        return sum(i for i, _ in info.linear_shapes.values())
    return sum(i for name, (i, _) in info.linear_shapes.items() if any(name == t or name.endswith("." + t) for t in targets))


def make_workload(
    method: MethodPlan,
    info: ModelInfo,
    *,
    device: str,
    weight_dtype: str,
    precision: str,
    optim: str,
    attention: str,
    packing: bool,
    max_length: int,
    micro_batch_size: int,
    checkpointing: bool,
    devices: int,
    strategy: str,
) -> Workload:
    """The workload of a resolved method entry on one device type. The virtual tokens of prompt-learning methods
    take positions in every sequence, so they count as tokens (prefix tuning's are keys and values only: counting
    them whole overstates its activations slightly)."""
    targets = getattr(method, "target_modules", None)
    return Workload(
        info=info,
        device=device,
        kind=method.kind,
        adapter=method.adapter,
        trainable=method.trainable_params,
        weight_dtype=weight_dtype,
        precision=precision,
        optim=optim,
        double_quant=bool(getattr(method, "bnb_4bit_use_double_quant", False)),
        lora_dropout=getattr(method, "lora_dropout", None) or getattr(method, "vera_dropout", None) or 0.0,
        adapted_features=adapted_features(info, targets) if method.produces_adapter and targets is not None else 0,
        attention="sdpa" if attention == "auto" else attention,
        packing=packing,
        max_length=max_length + getattr(method, "num_virtual_tokens", 0),
        micro_batch_size=micro_batch_size,
        checkpointing=checkpointing,
        devices=devices,
        strategy=strategy,
        sequences_per_example=method.sequences(),
        reference_forward=method.runs_reference(),
        reward_params=method.reward_model_params,
        completion_length=getattr(method, "max_completion_length", 0),
    )


def workload_of_plan(plan: Plan, info: ModelInfo) -> Workload:
    """The workload a resolved plan describes, for the device its estimate is for."""
    device = plan.estimates.device
    return make_workload(
        plan.method,
        info,
        device=device,
        weight_dtype=plan.model.dtype[device],
        precision=plan.hardware.precision[device],
        optim=plan.training.optim[device],
        attention=plan.model.attn_implementation,
        packing=plan.data.packing,
        max_length=plan.data.max_length,
        micro_batch_size=plan.training.micro_batch_size,
        checkpointing=plan.training.gradient_checkpointing,
        devices=plan.hardware.devices,
        strategy=plan.hardware.strategy,
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

    held = 4 if w.adapter != "none" else b  # bytes of a trainable weight as the model holds it
    master = 0
    if mixed and w.strategy.startswith("deepspeed"):
        held, master = 2, 4
    elif mixed and w.strategy == "fsdp":
        held = 4
    if w.quantized:
        base = linear * NF4_BITS[w.double_quant] / 8 + (n - linear) * 4 + largest * 2
    elif w.adapter != "none":
        base = n * b
    else:
        base = 0  # full fine-tuning: the base weights are the trainable ones
    weights = base + w.trainable * held
    reference = n * b if w.reference_copy else 0
    rewards = w.reward_params * b  # reward models, frozen, in the policy's dtype
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
    # Sampling keeps keys and values of every layer for each sequence of the micro batch (prompt and completion):
    # counted beside the activations, though they are freed before the backward pass (so it errs high)
    kv_cache = tokens * layers * 2 * kv * act if w.completion_length else 0
    overhead = (OVERHEAD_GIB + (NCCL_GIB if w.devices > 1 else 0)) * GIB if w.device == "cuda" else 0
    return {
        "weights": weights / weight_shards,
        "reference_model": reference / weight_shards,
        "reward_models": rewards,
        "master_weights": w.trainable * master / state_shards,
        "gradients": gradients / state_shards,
        "optimizer": optimizer / state_shards,
        "gathered_weights": gathered,
        "activations": tokens * per_token,
        "logits": tokens * info.vocab_size * LOGIT_BYTES,
        "kv_cache": kv_cache,
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
        if w.adapter != "none" or not w.trainable:
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
    pair = " x 2 (the completion, and another for KTO's KL estimate)" if w.kind == "kto" else " x 2 (chosen, rejected)"
    if w.completion_length:
        pair = f" x {w.sequences_per_example} completions per prompt"
    per = f"micro batch {w.micro_batch_size} x {w.max_length} tokens" + (pair if w.sequences_per_example > 1 else "")
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


# -- the lock's estimates -----------------------------------------------------------------------------


def matmul_weights(info: ModelInfo) -> int:
    """The weights of every matmul a token passes through: the linear layers and the output head (M above)."""
    return sum(i * o for i, o in info.linear_shapes.values()) + info.vocab_size * info.hidden_size


def flops_per_token(w: Workload, context: int) -> int:
    """Training FLOPs per token processed (see the module's docstring)."""
    info = w.info
    matmul = matmul_weights(info)
    attention = info.num_layers * info.num_attention_heads * info.head_dim * context
    flops = (4 * matmul + 6 * w.trainable) if w.adapter != "none" else 6 * matmul
    flops += 12 * attention
    if w.checkpointing:
        flops += 2 * matmul + 4 * attention
    if w.reference_forward:
        flops += 2 * matmul + 4 * attention
    if w.reward_params:  # each reward model scores every completion: one forward
        flops += 2 * w.reward_params
    return int(flops)


def time_estimate(w: Workload, target: Target | None, t: TrainingPlan, d: DataPlan) -> dict[str, Any] | None:
    """Tokens, FLOPs and seconds for the whole run on the target; None without a peak to divide by."""
    if w.device != "cuda" or target is None or target.tflops is None or w.precision == "fp32":
        return None
    train = d.splits["train"]
    tokens_per_epoch = train.tokens * w.sequences_per_example
    context = d.max_length if d.packing else max(1, round(train.tokens / max(1, train.examples)))
    tokens = round(tokens_per_epoch * t.max_steps / t.steps_per_epoch)
    per_token = flops_per_token(w, context)
    utilization = w.utilization
    seconds = tokens * per_token / (w.devices * target.tflops * 1e12 * utilization)
    generated = 0
    if w.completion_length:  # sampling: one forward (2M) per completion token, at the bandwidth-bound rate
        generated = t.max_steps * t.batch_size * w.sequences_per_example * w.completion_length
        seconds += generated * 2 * matmul_weights(w.info) / (w.devices * target.tflops * 1e12 * GENERATION_UTILIZATION)
    return {
        "tokens": tokens,
        "attention_context": context,
        "flops_per_token": per_token,
        "peak_tflops": target.tflops,
        "utilization": utilization,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / t.max_steps, 3),
        **({"generated_tokens": generated} if generated else {}),
    }


def estimates(w: Workload, target: Target | None, t: TrainingPlan, d: DataPlan) -> Estimates:
    """The lock's `estimates`: memory per device with its parts, the fit verdict, and the run's time."""
    parts = memory_parts(w)
    peak = peak_gib(w)
    memory = target.memory_gib if target is not None else None
    judged = verdict(peak, target, w.device)
    from ftc.compiler.plan.model import Estimates

    return Estimates.model_validate({
        "device": w.device,
        "peak_memory_gib": peak,
        "breakdown_gib": {name: round(parts[name] / GIB, 3) for name in PARTS if parts[name] or name not in OPTIONAL_PARTS},
        "tokens_per_epoch": d.splits["train"].tokens,
        "tokens_per_forward": w.tokens_per_forward,
        "attention": w.attention,
        "gpu": None if target is None else {"type": target.name, "memory_gib": target.memory_gib, "peak_tflops": target.tflops},
        "verdict": judged,
        "headroom_gib": round(memory - peak, 2) if memory is not None and judged != "not applicable" else None,
        "time": time_estimate(w, target, t, d),
    })

