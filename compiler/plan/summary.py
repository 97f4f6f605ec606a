"""`ftc plan`: the lock, told as a reviewer wants to read it.

`describe_plan` is a pure function of the Plan (or Lock): the same plan always gives the same text. Each
section is a title line followed by indented `label  value` rows; values may run over several lines.
"""

from __future__ import annotations

from typing import Any

from ftc.compiler.build.lock import plan_hash
from ftc.compiler.methods import METHODS
from ftc.compiler.plan.model import DataInput, DataPlan, Estimates, ModelInput, Plan, SplitPlan, TimeEstimate

LABEL_WIDTH = 18
SHOWN_LINES = 10  # dropped/truncated line numbers listed before "... and N more"
MEMORY_PARTS = ("weights", "reference_model", "master_weights", "gradients", "optimizer", "gathered_weights", "activations", "logits", "overhead")  # the order they add up in

Rows = list[tuple[str, str | list[str]]]


def describe_plan(lock: Plan) -> str:
    """The plan as plain text: what is trained, on what, for how long, with how much memory, and how it is judged."""
    sections = [
        _project(lock),
        _model(lock),
        _method(lock),
        _data(lock),
        _training(lock),
        _memory(lock),
        _evaluation(lock),
        _serve(lock),
    ]
    return "\n\n".join(_block(title, rows) for title, rows in sections) + "\n"


# -- numbers ----------------------------------------------------------------------------------------


def count(n: int) -> str:
    """12,345: digits grouped by thousands."""
    return f"{n:,}"


def params(n: int) -> str:
    """A parameter count as people say it: 4.88M, 134.5M, 1.24B, 950."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            x = n / size
            return f"{x:.2f}{unit}" if x < 10 else f"{x:.1f}{unit}"
    return str(n)


def share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "n/a"


def plural(n: float, word: str) -> str:
    return f"{n:g} {word}" if n == 1 else f"{n:g} {word}s"


def per_device(table: Any) -> str:
    """{'cpu': 'fp32', 'cuda': 'bf16'} -> 'cpu fp32, cuda bf16'."""
    return ", ".join(f"{device} {value}" for device, value in sorted(table.items()))


def short_hash(sha256: str) -> str:
    return f"sha256:{sha256[:12]}"


# -- layout -----------------------------------------------------------------------------------------


def _block(title: str, rows: Rows) -> str:
    lines = [title]
    for label, value in rows:
        values = value if isinstance(value, list) else [value]
        for i, text in enumerate(values or ["none"]):
            lines.append(f"  {(label if i == 0 else ''):<{LABEL_WIDTH}}{text}".rstrip())
    return "\n".join(lines)


# -- sections ---------------------------------------------------------------------------------------


def _project(lock: Plan) -> tuple[str, Rows]:
    project = lock.project
    spec = lock.inputs.spec
    rows: Rows = []
    if project.description:
        rows.append(("description", project.description))
    rows += [
        ("spec", f"{spec.path} ({short_hash(spec.sha256)})"),
        ("seed", str(project.seed)),
        ("compiled by", f"ftc {lock.ftc_version}"),
    ]
    return f"{project.name}  plan {short_hash(plan_hash(lock))}", rows


def _model_reference(ref: ModelInput) -> str:
    if ref.kind == "hub":
        where = f"hub model @ {ref.revision[:12]}" if ref.revision else "hub model"
    elif ref.kind == "gguf":
        where = "GGUF file"
    else:
        where = "local folder"
    if ref.package:
        where += f", package {ref.package.name} {ref.package.version}"
    return f"{ref.reference} ({where})"


def _model(lock: Plan) -> tuple[str, Rows]:
    model = lock.model
    template = lock.inputs.chat_template
    source = "the model's own" if template.source == "model" else template.source
    rows: Rows = [
        ("reference", _model_reference(lock.inputs.model)),
        ("architecture", f"{model.architecture} ({model.model_type}): {model.num_layers} layers, hidden size {model.hidden_size}, vocab {count(model.vocab_size)}"),
        ("parameters", f"{params(model.total_params)} ({count(model.total_params)})"),
        ("weights dtype", per_device(model.dtype)),
        ("tokenizer", f"{model.tokenizer_class}; eos {model.eos_token}, pad {model.pad_token}"),
        ("chat template", f"{source} ({short_hash(template.sha256)})"),
    ]
    if model.attn_implementation != "auto":
        rows.append(("attention", model.attn_implementation))
    if model.trust_remote_code:
        rows.append(("remote code", "trusted (the model's own Python code runs)"))
    if model.token_env:
        rows.append(("hub token", f"from ${model.token_env}"))
    return "model", rows


def _argument(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _method(lock: Plan) -> tuple[str, Rows]:
    m = lock.method
    rows: Rows = [("kind", METHODS[m.kind].describe(m))]
    if m.adapter == "lora":
        scale = "sqrt(r)" if m.use_rslora else "r"
        rows.append(("LoRA", f"r {m.r}, lora_alpha {m.lora_alpha} (scale lora_alpha / {scale}), dropout {m.lora_dropout:g}, bias {m.bias}"))
        targets = m.target_modules
        rows.append(("target modules", targets if isinstance(targets, str) else ", ".join(targets)))
        if m.modules_to_save:
            rows.append(("trained in full", ", ".join(m.modules_to_save)))
    elif m.adapter != "none":
        arguments = {key: value for key, value in m.peft_arguments().items() if value is not None}
        rows.append((m.adapter, ", ".join(f"{key} {_argument(value)}" for key, value in arguments.items())))
    if m.merge_refusal:
        rows.append(("merge", f"not possible: {m.merge_refusal}"))
    if m.serve_as is None:
        rows.append(("serve", f"not through vLLM: {m.serve_refusal}"))
    elif m.serve_as == "prompt_embeds":
        rows.append(("serve", "through vLLM, the learned virtual tokens sent as prompt embeddings"))
    if m.kind == "qlora":
        double = ", double quantization" if m.bnb_4bit_use_double_quant else ""
        rows.append(("4-bit base", f"{m.bnb_4bit_quant_type}{double}; compute dtype {per_device(m.bnb_4bit_compute_dtype)}"))
    if m.kind == "dpo":
        rows.append(("DPO", f"beta {m.beta:g}, loss {m.loss_type}, reference {m.reference}"))
    elif m.kind == "orpo":
        rows.append(("ORPO", f"beta (the odds-ratio weight) {m.beta:g}; no reference model"))
    elif m.kind == "kto":
        weights = f"desirable_weight {m.desirable_weight:g}, undesirable_weight {m.undesirable_weight:g}"
        rows.append(("KTO", f"beta {m.beta:g}, loss {m.loss_type}, {weights}, reference {m.reference}"))
    elif m.kind == "reward":
        center = f"center_rewards_coefficient {m.center_rewards_coefficient:g}" if m.center_rewards_coefficient else "scores not centred"
        rows.append(("reward model", f"a one-output score head on the base; {center}; final/ holds whole weights"))
    elif m.kind in ("grpo", "rloo"):
        rows += _rl_rows(m)
    rows.append(("trainable", f"{params(m.trainable_params)} of {params(m.total_params)} ({share(m.trainable_params, m.total_params)})"))
    return "method", rows


REWARD_SETTINGS = ("key", "field", "metric", "pattern", "match", "target", "penalty", "schema_file", "path")


def _rl_rows(m: Any) -> Rows:
    """GRPO's and RLOO's sampling, KL pull and rewards, one row per reward with what it reads."""
    reference = "no reference model" if m.beta == 0 else ("the base with the adapter off as reference" if m.adapter == "lora" else "a frozen copy as reference")
    rows: Rows = [
        ("sampling", f"{m.num_generations} completions per prompt, up to {m.max_completion_length} tokens, temperature {m.temperature:g}"),
        ("KL beta", f"{m.beta:g} ({reference})"),
    ]
    for reward in m.rewards:
        settings = ", ".join(f"{key} {reward[key]!r}" if isinstance(reward[key], str) else f"{key} {reward[key]}" for key in REWARD_SETTINGS if reward.get(key) is not None)
        rows.append(("reward", f"{reward['name']} x {reward['weight']:g}" + (f" ({settings})" if settings else "")))
    return rows


def _split_rows(name: str, split: SplitPlan, d: DataPlan, file: DataInput | None) -> Rows:
    rows: Rows = []
    if file is not None:
        rows.append((f"{name} file", f"{file.path} ({count(file.bytes)} bytes, {short_hash(file.sha256)})"))
    counts = f"{count(split.examples)} examples"
    if split.records != split.examples:
        counts = f"{count(split.records)} records -> {counts}"
    lines = [
        f"{counts}, {count(split.tokens)} tokens",
        f"{count(split.loss_tokens)} tokens carry loss ({share(split.loss_tokens, split.tokens)})",
        f"longest {count(split.longest)} tokens of max_length {count(d.max_length)}",
    ]
    if split.packed_sequences is not None:
        lines.append(f"packed into {count(split.packed_sequences)} sequences of up to {count(d.max_length)} tokens")
    lines.append(f"dropped {len(split.dropped_lines)}, truncated {len(split.truncated_lines)}")
    for what in ("dropped", "truncated"):
        numbers = getattr(split, f"{what}_lines")
        if numbers:
            more = f" ... and {len(numbers) - SHOWN_LINES} more" if len(numbers) > SHOWN_LINES else ""
            lines.append(f"{what} lines: {', '.join(map(str, numbers[:SHOWN_LINES]))}{more}")
    rows.append((name, lines))
    return rows


def _data(lock: Plan) -> tuple[str, Rows]:
    d = lock.data
    files = lock.inputs.data
    rows: Rows = [("format", f"{d.format} ({'detected' if d.format_detected else 'declared'})")]
    if d.converted_from:
        rows[0] = ("format", f"{d.converted_from} ({'detected' if d.format_detected else 'declared'}), converted to {d.format}")
    packing = f"on ({d.packing_strategy})" if d.packing else "off"
    rows.append(("settings", f"max_length {d.max_length}, overlong {d.overlong}, train on {d.train_on}, packing {packing}"))
    if d.system_prompt:
        rows.append(("system prompt", repr(d.system_prompt)))
    if d.cleaning:
        c = d.cleaning
        steps = [f"dedup {c.dedup}"] if c.dedup != "none" else []
        steps += ["drop empty turns"] if c.drop_empty_turns else []
        steps += [f"Unicode {c.normalize_unicode}"] if c.normalize_unicode != "none" else []
        steps += ["strip whitespace"] if c.strip_whitespace else []
        rows.append(("cleaning", f"{', '.join(steps)}: {c.removed} removed, {c.changed} changed, each listed in {c.report}"))
    validation = d.validation
    if validation.source == "split":
        rows.append(("validation", f"{validation.split:g} of the train file held out (seed {validation.seed})"))
    elif validation.source == "none":
        rows.append(("validation", "none"))
    for name in sorted(d.splits, key=lambda s: (s != "train", s)):
        rows += _split_rows(name, d.splits[name], d, files.get(name))
    return "data", rows


def _training(lock: Plan) -> tuple[str, Rows]:
    t = lock.training
    hw = lock.hardware
    if t.epochs is not None:
        steps = f"{plural(t.epochs, 'epoch')} x {t.steps_per_epoch} steps per epoch = {t.max_steps} steps"
    else:
        steps = f"max_steps {t.max_steps} ({t.steps_per_epoch} steps per epoch)"
    rows: Rows = [
        ("steps", steps),
        ("sequences/epoch", count(t.sequences_per_epoch)),
        ("warmup", plural(t.warmup_steps, "step")),
    ]
    intervals = [f"eval every {t.eval_steps}" if t.eval_steps else "no evaluation during training"]
    intervals.append(f"save every {t.save_steps} (keep {t.save_total_limit})")
    intervals.append(f"log every {t.logging_steps} steps")
    rows.append(("intervals", ", ".join(intervals)))
    if t.early_stopping_patience is not None:
        rows.append(("early stopping", f"after {plural(t.early_stopping_patience, 'evaluation')} without a better eval_loss"))
    devices = hw.devices
    chosen = " (micro batch chosen to fit the GPU)" if t.micro_batch_size_auto else ""
    rows.append(("effective batch", f"{t.batch_size} = {t.micro_batch_size} micro x {t.gradient_accumulation_steps} accumulation x {plural(devices, 'device')}{chosen}"))
    rows.append(("learning rate", f"{t.learning_rate:g}, {t.scheduler} schedule, weight decay {t.weight_decay:g}, max grad norm {t.max_grad_norm:g}"))
    rows.append(("checkpointing", "gradient checkpointing on" if t.gradient_checkpointing else "gradient checkpointing off"))
    dtype = lock.model.dtype
    for device in sorted(t.optim):
        rows.append((f"on {device}", f"optimizer {t.optim[device]}, precision {hw.precision[device]}, weights {dtype[device]}"))
    where = f"accelerator {hw.accelerator}, {hw.gpus} per node x {plural(hw.nodes, 'node')}, strategy {hw.strategy}"
    if hw.gpu_type or hw.gpu_memory_gb:
        where += f", {hw.gpu_type or str(hw.gpu_memory_gb) + ' GB'}"
    rows.append(("hardware", where))
    trackers = ", ".join(t.report_to) or "none"
    if t.wandb_project:
        trackers += f" (wandb project {t.wandb_project})"
    rows.append(("report to", trackers))
    return "training", rows


def _memory(lock: Plan) -> tuple[str, Rows]:
    e = lock.estimates
    breakdown = e.breakdown_gib
    names = [n for n in MEMORY_PARTS if n in breakdown] + sorted(set(breakdown) - set(MEMORY_PARTS))
    parts = ", ".join(f"{name.replace('_', ' ')} {breakdown[name]:g}" for name in names)
    rows: Rows = [
        ("peak", f"{e.peak_memory_gib:g} GiB per {e.device} device"),
        ("breakdown (GiB)", parts),
    ]
    rows.append(("assumes", f"{count(e.tokens_per_forward)} tokens per forward pass (rows x max_length, padded or packed full), {e.attention} attention"))
    gpu = e.gpu
    if gpu:
        described = [
            f"{gpu.memory_gib:g} GiB" if gpu.memory_gib else "memory not given",
            f"{gpu.peak_tflops:g} bf16 TFLOPS" if gpu.peak_tflops else "peak not given",
        ]
        rows.append(("gpu", f"{gpu.type or 'described by hand'}: {', '.join(described)}"))
    rows.append(("verdict", _verdict(e)))
    rows.append(("time", _time(e.time, lock, e)))
    return "memory and time (estimated from the model's config and the token counts)", rows


def _verdict(e: Estimates) -> str:
    judged = e.verdict
    if judged == "not applicable":
        return "none: the plan runs on the CPU"
    if judged == "unknown":
        return "none: no GPU memory given (set hardware.gpu_type or gpu_memory_gb)"
    memory = e.gpu.memory_gib
    spare = f"{e.headroom_gib:g} GiB of {memory:g} to spare ({e.headroom_gib / memory:.0%})"
    if judged == "tight":
        return f"tight: {spare}, within 10% of the memory"
    if judged == "does not fit":
        return f"does not fit: {-e.headroom_gib:g} GiB over the {memory:g} GiB"
    return f"fits: {spare}"


def duration(seconds: float) -> str:
    """About how long: under a second, 45 s, 12 min, 3.4 h."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _time(time: TimeEstimate | None, lock: Plan, e: Estimates) -> str | list[str]:
    if time is None:
        if e.device != "cuda":
            return "no estimate: the plan runs on the CPU"
        if lock.hardware.precision.get("cuda") == "fp32":
            return "no estimate: fp32 training has no tensor-core peak to divide by"
        return "no estimate: no GPU peak known (set hardware.gpu_type or gpu_tflops)"
    steps = lock.training.max_steps
    devices = lock.hardware.devices
    return [
        f"{'' if time.seconds < 1 else 'about '}{duration(time.seconds)}: {steps} steps x {time.seconds_per_step:g} s",
        f"{count(time.tokens)} tokens x {time.flops_per_token / 1e9:.2f} GFLOP per token (attention over {count(time.attention_context)} tokens)",
        f"at {time.utilization:.0%} of {time.peak_tflops:g} TFLOPS x {plural(devices, 'device')}, communication not counted",
    ]


def _evaluation(lock: Plan) -> tuple[str, Rows]:
    ev = lock.evaluation
    rows: Rows = [
        ("metrics", ", ".join(ev.metrics) or "none"),
        ("base model", "evaluated side by side" if ev.compare_base else "not evaluated"),
        ("decoding", f"greedy, up to {ev.max_new_tokens} new tokens, {'all' if ev.max_examples is None else 'at most ' + str(ev.max_examples)} held-out examples"),
    ]
    if ev.json_schema:
        rows.append(("JSON Schema", ev.json_schema))
    if ev.lm_eval_tasks:
        rows.append(("lm-eval tasks", ", ".join(ev.lm_eval_tasks)))
    if ev.baselines:
        shown = ", ".join(f"few_shot (k={ev.few_shot_k})" if b == "few_shot" else b for b in ev.baselines)
        rows.append(("baselines", f"{shown}; verdict margin {ev.baseline_margin:g}"))
    rows.append(("gates", list(ev.gates) or ["none"]))
    return "evaluation", rows


def _serve(lock: Plan) -> tuple[str, Rows]:
    s = lock.serve
    host = f"[{s.host}]" if ":" in s.host else s.host
    rows: Rows = [
        ("endpoint", f"http://{host}:{s.port}/v1 (OpenAI-compatible)"),
        ("served name", s.served_model_name),
        ("max model len", str(s.max_model_len)),
        ("dtype", per_device(s.dtype)),
        ("api key", f"from ${s.api_key_env}" if s.api_key_env else "none (no auth)"),
    ]
    if s.log:
        redacted = ", ".join([*s.log_redact, *([f"{len(s.log_patterns)} pattern(s)"] if s.log_patterns else [])]) or "nothing"
        rows.append(("exchange log", f"{s.log}/ (redacted: {redacted}; a new file every {s.log_max_mb} MiB)"))
    x = lock.export
    if x is not None:
        gates = "; ".join(f"{fmt}: top-1 >= {x.gates[fmt].min_top1:.0%}, metrics -{x.gates[fmt].max_metric_drop:g}" for fmt in x.formats)
        rows.append(("export", f"{', '.join(x.formats)} from merged/, each gated on {x.examples} held-out examples ({gates})"))
    return "serve", rows
