"""Checks across sections, and on the input files the spec names. Collected, never fail-fast."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ftc.compiler.data.clean import Cleaning, clean_stream, clean_value
from ftc.compiler.data.openai import read_records
from ftc.compiler.data.read import SUFFIXES, Format, Record, Survey, survey
from ftc.compiler.data.records import TRAINS_ON_FIELDS, TRAINS_ON_FORMATS, TRAINS_ON_WORDS, UNPAIR_HINT
from ftc.compiler.diagnostics import Diagnostic, errors
from ftc.compiler.methods import METHODS
from ftc.compiler.plan.inputs import InputError, hub_cache_has, locate_model, read_template
from ftc.compiler.spec.export import check_export
from ftc.compiler.spec.gates import COMPANIONS, GRAMMAR, check_baselines, gate_problem, parse_gate
from ftc.compiler.spec.hardware import GPU_TYPES
from ftc.compiler.spec.validate import LoadedSpec, display_path, parse

FEW_EXAMPLES, SOME_EXAMPLES = 50, 500
DUPLICATE_SHARE = 0.1  # exact repeats above this share of a file's examples are worth a warning
SHOWN = 10  # line numbers a message lists before "and N more"
_REPEATS_HINT = 'the model memorises what it sees often; set dedup = "exact" in [data] to keep the first of each'
OVERLAP_HINT = "validation must be held out: remove them from one side, or the validation loss flatters the model"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class DataSummary:
    """What the data check found, for later stages: formats and record counts per split."""

    format: Format | None  # the format the data trains as
    train_records: int
    validation_records: int | None  # None when the split comes from validation_split
    converted_from: str | None = None  # "openai": the files hold OpenAI's records, read as `format`


def check(loaded: LoadedSpec) -> tuple[list[Diagnostic], DataSummary | None]:
    """Every cross-section and input-file check. Returns diagnostics and, when the data was readable, its summary."""
    diags = [*_check_model(loaded), *_check_method(loaded), *_check_training(loaded), *_check_hardware(loaded)]
    diags += [*_check_evaluation(loaded), *check_baselines(loaded), *_check_serve(loaded), *check_export(loaded)]
    data_diags, summary = _check_data(loaded)
    return diags + data_diags, summary


def is_hub_id(base: str, loaded: LoadedSpec) -> bool:
    """'org/name' as the hub spells ids: no '..' or '--', no part starting or ending in '.' or '-'; and no such local path."""
    if base.startswith("pkg:") or not _HUB_ID.match(base) or ".." in base or "--" in base:
        return False
    if any(part[0] in ".-" or part[-1] in ".-" for part in base.split("/")):
        return False
    try:
        return not loaded.resolve(base).exists()
    except (OSError, RuntimeError):  # a local path that cannot be followed (a link loop): _check_model names it
        return False


def _check_model(loaded: LoadedSpec) -> Iterator[Diagnostic]:
    m = loaded.spec.model
    hub = is_hub_id(m.base, loaded)
    if not hub:
        try:  # the model's files, checked the way compile reads them (nothing is hashed or loaded)
            locate_model(m.base, None, loaded.base_dir, loaded.base_dir, False)
        except InputError as exc:
            if exc.message == f"model not found: {m.base}" and m.base.count("/") == 1 and not m.base.startswith((".", "/", "~")):
                exc = InputError(exc.key, f"{exc.message} (and it is not a valid hub id)", "a hub id is 'org/name' in letters, digits, '-', '_' and '.', with no spaces or '..'")
            yield loaded.diag("model.base", exc.message, exc.hint)
        else:
            written, resolved = Path(m.base), loaded.resolve(m.base)
            if not m.base.startswith("pkg:") and not written.is_absolute() and ".." not in written.parts and not resolved.is_relative_to(loaded.base_dir.resolve()):
                yield loaded.diag(
                    "model.base",
                    f"{m.base} leads outside the spec's folder through a symlink, to {resolved}",
                    "the lock records where it leads, so the build needs the same layout on every machine; copy the model in, or write that path if you mean it",
                    severity="warning",
                )
    elif not hub_cache_has(m.base):
        yield loaded.diag(
            "model.base",
            f"model not found: {m.base} is neither a folder next to the spec nor a hub model in the local cache",
            f"for a local model give its folder relative to the spec; for a hub model download it first (`huggingface-cli download {m.base}`): ftc never downloads at compile time",
        )
    if m.revision is not None and not hub:
        yield loaded.diag("model.revision", "revision applies to hub ids only", "remove it; a local model is pinned by the hash of its files")
    if m.trust_remote_code and not (hub and m.revision and _COMMIT.match(m.revision)):
        yield loaded.diag(
            "model.trust_remote_code",
            "trust_remote_code needs a pinned commit",
            "set model.revision to the full 40-character commit sha of a hub model whose code you have read",
        )
    if m.chat_template != "auto":
        problem = file_problem(loaded.base_dir, m.chat_template, "chat template")
        if problem is not None:
            yield loaded.diag("model.chat_template", problem[0], f"{problem[1]}; give a .jinja file relative to the spec, or 'auto'")
        else:
            try:
                read_template(loaded.base_dir / m.chat_template, m.chat_template)
            except InputError as exc:
                yield loaded.diag("model.chat_template", exc.message, exc.hint)


def _check_method(loaded: LoadedSpec) -> Iterator[Diagnostic]:
    """The checks the method declares for itself (ftc.compiler.methods)."""
    checks = METHODS[loaded.spec.method.kind].checks
    if checks is not None:
        yield from checks(loaded)


def _devices(loaded: LoadedSpec) -> int:
    hw = loaded.spec.hardware
    return hw.gpus * hw.nodes


def _check_training(loaded: LoadedSpec) -> Iterator[Diagnostic]:
    spec = loaded.spec
    t = spec.training
    set_keys = t.model_fields_set
    if t.micro_batch_size == "auto":
        yield from _check_auto_micro_batch(loaded)
    else:
        yield from _check_batch_division(loaded)
    if "epochs" in set_keys and t.max_steps is not None:
        yield loaded.diag("training.max_steps", "both epochs and max_steps are set", "keep one: max_steps stops training after that many steps whatever the epochs")
    if "warmup_ratio" in set_keys and t.warmup_steps is not None:
        yield loaded.diag("training.warmup_steps", "both warmup_ratio and warmup_steps are set", "keep one of them")
    has_val = spec.data.validation is not None or spec.data.validation_split is not None
    if t.early_stopping_patience is not None and not has_val:
        yield loaded.diag("training.early_stopping_patience", "early stopping needs validation data", "set data.validation or data.validation_split")
    if t.eval_steps is not None and not has_val:
        yield loaded.diag("training.eval_steps", "eval_steps is set but there is no validation data", "set data.validation or data.validation_split, or remove eval_steps")
    if t.early_stopping_patience is not None and t.save_steps is not None and t.eval_steps is not None and t.save_steps % t.eval_steps:
        yield loaded.diag("training.save_steps", "with early stopping, save_steps must be a multiple of eval_steps", f"use save_steps = {t.eval_steps}")
    if t.wandb_project is not None and "wandb" not in t.report_to:
        yield loaded.diag("training.wandb_project", "wandb_project is set but wandb is not in report_to", 'add "wandb" to report_to, or remove wandb_project')
    if len(set(t.report_to)) != len(t.report_to):
        yield loaded.diag("training.report_to", "a tracker is listed twice", "list each tracker once")
    if t.optim.startswith("paged_") and spec.hardware.accelerator == "cpu":
        yield loaded.diag(
            "training.optim",
            f"{t.optim} pages optimizer state only on CUDA; on the CPU bitsandbytes runs it unpaged",
            'use "adamw_torch" on the CPU, or "auto" (paged on CUDA, AdamW on the CPU)',
            severity="warning",
        )
    kind = spec.method.kind
    lr = t.learning_rate
    usual = METHODS[kind].usual_learning_rates(spec.method)
    if lr is not None and usual is not None:
        low, high = usual
        what = {"lora": " with a LoRA adapter", "none": " on every weight"}.get(getattr(spec.method, "adapter", ""), "")
        if not low <= lr <= high:
            yield loaded.diag(
                "training.learning_rate",
                f"learning_rate {lr:g} is outside the usual range for {kind}{what} ({low:g} to {high:g})",
                "too high makes loss spike; too low underfits. Keep it if you measured it",
                severity="warning",
            )


def _check_batch_division(loaded: LoadedSpec) -> Iterator[Diagnostic]:
    t = loaded.spec.training
    per_step = t.micro_batch_size * _devices(loaded)
    if t.batch_size % per_step:
        lower = max(per_step, t.batch_size // per_step * per_step)
        yield loaded.diag(
            "training.batch_size",
            f"batch_size {t.batch_size} is not a multiple of micro_batch_size x devices = {t.micro_batch_size} x {_devices(loaded)} = {per_step}",
            f"use batch_size = {lower} or {lower + per_step}, or change micro_batch_size",
            near=("training.micro_batch_size", "hardware.gpus", "hardware.nodes"),
        )
    elif t.gradient_accumulation_steps is not None and t.gradient_accumulation_steps * per_step != t.batch_size:
        yield loaded.diag(
            "training.gradient_accumulation_steps",
            f"micro_batch_size x gradient_accumulation_steps x devices = {t.micro_batch_size} x {t.gradient_accumulation_steps} x {_devices(loaded)} = {per_step * t.gradient_accumulation_steps}, not batch_size = {t.batch_size}",
            f"remove gradient_accumulation_steps (it is derived: {t.batch_size // per_step}), or change batch_size",
            near=("training.batch_size", "training.micro_batch_size"),
        )


def _check_auto_micro_batch(loaded: LoadedSpec) -> Iterator[Diagnostic]:
    """micro_batch_size = "auto" is sized to a GPU's memory, so the spec must say how much there is."""
    spec = loaded.spec
    t, hw = spec.training, spec.hardware
    devices = _devices(loaded)
    if hw.accelerator == "cpu":
        yield loaded.diag("training.micro_batch_size", 'micro_batch_size = "auto" sizes the micro batch to a GPU\'s memory, but accelerator = "cpu"', "give a number, e.g. micro_batch_size = 4")
    elif hw.gpu_type is None and hw.gpu_memory_gb is None:
        yield loaded.diag(
            "training.micro_batch_size",
            'micro_batch_size = "auto" needs the GPU\'s memory',
            f"set hardware.gpu_type ({', '.join(GPU_TYPES)}) or hardware.gpu_memory_gb, or give a number",
        )
    if t.batch_size % devices:
        yield loaded.diag("training.batch_size", f"batch_size {t.batch_size} is not a multiple of the {devices} devices", f"use batch_size = {max(devices, t.batch_size // devices * devices)} or {(t.batch_size // devices + 1) * devices}", near=("hardware.gpus",))
    if t.gradient_accumulation_steps is not None:
        yield loaded.diag("training.gradient_accumulation_steps", 'gradient_accumulation_steps is derived from the micro batch that "auto" picks', "remove it")


def _check_hardware(loaded: LoadedSpec) -> Iterator[Diagnostic]:
    hw = loaded.spec.hardware
    if hw.gpu_type is not None and hw.gpu_memory_gb is not None:
        yield loaded.diag("hardware.gpu_memory_gb", "give gpu_type or gpu_memory_gb, not both", "the memory of a listed gpu_type is known")
    if hw.gpu_type is not None and hw.gpu_tflops is not None:
        yield loaded.diag("hardware.gpu_tflops", "give gpu_type or gpu_tflops, not both", "the peak of a listed gpu_type is known")
    devices = _devices(loaded)
    if hw.strategy in ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3") and devices == 1:
        yield loaded.diag("hardware.strategy", f"strategy {hw.strategy!r} needs more than one device", 'raise hardware.gpus (or nodes), or use strategy = "none"')
    if hw.strategy == "none" and devices > 1:
        yield loaded.diag("hardware.strategy", f'strategy "none" runs one process, but gpus x nodes = {devices}', 'use "ddp" or "fsdp", or "auto"')
    if hw.accelerator == "cpu":
        if hw.precision == "fp16":
            yield loaded.diag("hardware.precision", "fp16 mixed precision needs CUDA", 'use "fp32" or "bf16" on the CPU, or "auto"')
        if hw.strategy.startswith("deepspeed"):
            yield loaded.diag("hardware.strategy", "DeepSpeed needs CUDA", 'use "ddp" on the CPU')
        described = [key for key in ("gpu_type", "gpu_memory_gb", "gpu_tflops") if getattr(hw, key) is not None]
        if described:
            key = f"hardware.{described[0]}"
            yield loaded.diag(key, 'a GPU is described but accelerator = "cpu"', 'remove it, or set accelerator = "cuda" or "auto"')


def _check_evaluation(loaded: LoadedSpec) -> Iterator[Diagnostic]:
    ev = loaded.spec.evaluation
    if "json_schema" in ev.metrics and ev.json_schema is None:
        yield loaded.diag("evaluation.metrics", "the json_schema metric needs evaluation.json_schema", "set json_schema to a JSON Schema file relative to the spec")
    problem = file_problem(loaded.base_dir, ev.json_schema, "JSON Schema file") if ev.json_schema is not None else None
    if problem is not None:
        yield loaded.diag("evaluation.json_schema", *problem)
    if len(set(ev.metrics)) != len(ev.metrics):
        yield loaded.diag("evaluation.metrics", "a metric is listed twice", "list each metric once")
    if not ev.metrics and not ev.lm_eval_tasks:
        yield loaded.diag("evaluation.metrics", "no metrics: `ftc eval` would measure nothing", 'list what to measure, e.g. metrics = ["exact_match"]', severity="warning")
    known = set(ev.metrics) | set(ev.lm_eval_tasks) | {c for m in ev.metrics for c in COMPANIONS.get(m, ())}
    for i, text in enumerate(ev.gates):
        try:
            gate = parse_gate(text)
        except ValueError as exc:
            yield loaded.diag(f"evaluation.gates.{i}", str(exc), GRAMMAR)
            continue
        for name in sorted(gate.metrics() - known):
            yield loaded.diag(f"evaluation.gates.{i}", f"gate uses {name!r}, which is not evaluated", "add it to evaluation.metrics (or lm_eval_tasks)")
        if "base" in (gate.side, gate.ref_side) and not ev.compare_base:
            yield loaded.diag(f"evaluation.gates.{i}", "gate compares with the base model, but compare_base = false", "set compare_base = true")
        problem = gate_problem(gate) if not gate.metrics() - known else None
        if problem is not None:
            yield loaded.diag(f"evaluation.gates.{i}", problem[1], problem[2], severity=problem[0])
    if ev.json_schema is not None and "json_schema" not in ev.metrics:
        yield loaded.diag("evaluation.json_schema", "json_schema is set, but the json_schema metric is not in metrics", 'add "json_schema" to metrics, or remove json_schema', severity="warning")


def _check_serve(loaded: LoadedSpec) -> Iterator[Diagnostic]:
    s = loaded.spec.serve
    if s.host not in ("127.0.0.1", "localhost", "::1"):
        yield loaded.diag(
            "serve.host",
            f"the server will listen on {s.host}, reachable beyond this machine",
            "keep 127.0.0.1 unless you mean it, and set serve.api_key_env",
            severity="warning" if s.api_key_env else "error",
        )


def extra_fields(spec) -> tuple[str, ...]:
    """Record fields the spec allows besides the format's own: its label field, and the fields rewards read."""
    from ftc.compiler.methods.rewards import fields_read

    label = (spec.data.label_field,) if spec.data.label_field else ()
    return tuple(dict.fromkeys(label + tuple(fields_read(getattr(spec.method, "rewards", [])))))


def file_problem(base: Path, rel: str, what: str) -> tuple[str, str] | None:
    """(message, hint) when `rel`, relative to `base`, is not a regular file that can be read; None when it is.
    Found with stat alone, never by opening: a FIFO waits for a writer and a device never ends."""
    if "\0" in rel:
        return f"the path of the {what} contains a NUL byte, which no file name can hold", "write the path without it"
    try:
        mode = (base / rel).stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{rel} is a symbolic link loop", "point the link (or one it leads to) at a real file"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"{what} not found: {rel}", "paths are relative to the spec's folder"
        return f"cannot read {rel}: {exc.strerror}", "give a regular file the spec's folder can reach"
    if stat.S_ISDIR(mode):
        return f"{rel} is a folder, not a {what}", "give the path of a file in it"
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        return f"{rel} is not a regular file ({kind})", f"give a regular {what}: ftc reads it whole and hashes it into the lock"
    if not os.access(base / rel, os.R_OK):
        return f"cannot read {rel}: permission denied", "make the file readable"
    return None


def digest(value: object) -> bytes:
    """A 16-byte digest of a record, for spotting repeats without keeping the records."""
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=16).digest()


def normalize(value: object) -> object:
    """Case-folded strings with whitespace runs collapsed, all the way down."""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    return value


def label_of(value: object, fmt: str, name: str) -> str | None:
    """The example's label: the record's field, or else that key of its answer when the answer is a JSON object."""
    if not isinstance(value, dict):
        return None
    label = value.get(name)
    if label is None:
        answer = final_answer(value, fmt)
        try:
            parsed = json.loads(answer) if answer else None
        except json.JSONDecodeError:
            parsed = None
        label = parsed.get(name) if isinstance(parsed, dict) else None
    return label if isinstance(label, str) or label is None else json.dumps(label, sort_keys=True)


def final_answer(value: dict, fmt: str) -> str | None:
    """What the example teaches the model to say: the last assistant turn, the completion (of unpaired data, a
    desirable one: an undesirable completion is what the model learns not to say), or the chosen answer."""
    if fmt == "chat":
        answers = [m.get("content") for m in value.get("messages", []) if isinstance(m, dict) and m.get("role") == "assistant"]
        answer = answers[-1] if answers else None
    elif fmt == "unpaired":
        answer = value.get("completion") if value.get("label") is True else None
    else:
        answer = value.get("completion" if fmt == "completion" else "chosen" if fmt == "preference" else "text")
    if isinstance(answer, list):
        answer = json.dumps(answer, sort_keys=True)
    return answer.strip() if isinstance(answer, str) else None


def lines_of(lines: list[int] | list[str], limit: int = SHOWN) -> str:
    """'3, 7, 9' or, past `limit`, the first ones and how many more: never an unbounded list."""
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


@dataclass
class _Examples:
    """What the record checks keep of one data file, as cleaned: digests by line, and the labelled count."""

    kept: int = 0
    repeats: list[int] = field(default_factory=list)  # lines that repeat an earlier example exactly
    normalized: dict[bytes, list[int]] = field(default_factory=dict)
    labelled: int = 0


def _examples(loaded: LoadedSpec, path: Path, fmt: Format | None, openai: bool) -> _Examples:
    d = loaded.spec.data
    found = _Examples()
    exact: set[bytes] = set()
    records = (r for r in read_records(path, display_path(path), openai) if isinstance(r, Record))
    for record in clean_stream(records, Cleaning.of(d), display_path(path), []):
        found.kept += 1
        key = digest(record.value)
        if key in exact:
            found.repeats.append(record.line)
        exact.add(key)
        found.normalized.setdefault(digest(normalize(record.value)), []).append(record.line)
        found.labelled += bool(d.label_field and fmt and label_of(record.value, fmt, d.label_field) is not None)
    return found


def _record_checks(loaded: LoadedSpec, seen: dict[str, _Examples], paths: dict[str, Path]) -> Iterator[Diagnostic]:
    """The checks of `ftc data check` that need only the records, as warnings: a file that repeats itself, a
    validation set that is not held out, a label field that no record has."""
    d = loaded.spec.data
    for key, found in seen.items():
        split = "train" if key == "train" else "validation"
        share = f"{len(found.repeats)} of {found.kept} {split} examples ({len(found.repeats) / max(found.kept, 1):.0%})"
        if len(found.repeats) > DUPLICATE_SHARE * found.kept:
            yield loaded.diag(f"data.{key}", f"{share} repeat an earlier one exactly, lines {lines_of(found.repeats)}", _REPEATS_HINT, severity="warning")
        if d.label_field and found.kept and not found.labelled:
            yield loaded.diag("data.label_field", f"no {split} example has a {d.label_field!r} label (a field of the record, or a key of a JSON answer)", "name the field the records carry, or remove label_field", severity="warning")
    if "validation" in paths and paths["validation"] == paths["train"]:
        yield loaded.diag("data.validation", "validation is the same file as train: nothing is held out", "give a file of examples that are not in train, or use validation_split", severity="warning")
    elif "validation" in seen and "train" in seen:
        train = seen["train"].normalized
        overlap = sorted(line for k, lines in seen["validation"].normalized.items() if k in train for line in lines)
        if overlap:
            yield loaded.diag("data.validation", f"{len(overlap)} validation example(s) also appear in train (after whitespace/case normalisation), lines {lines_of(overlap)}", OVERLAP_HINT, severity="warning")


def _check_data(loaded: LoadedSpec) -> tuple[list[Diagnostic], DataSummary | None]:
    spec, d = loaded.spec, loaded.spec.data
    diags: list[Diagnostic] = []
    if d.validation is not None and d.validation_split is not None:
        diags.append(loaded.diag("data.validation_split", "both validation and validation_split are set", "keep one: a file of held-out examples, or a share of train"))
    expected = None if d.format == "auto" else d.format
    found: dict[str, Survey] = {}
    paths: dict[str, Path] = {}
    for key in ("train", "validation"):
        rel = getattr(d, key)
        if rel is None:
            continue
        problem = file_problem(loaded.base_dir, rel, "data file")
        if problem is not None:
            diags.append(loaded.diag(f"data.{key}", *problem))
            continue
        path = loaded.resolve(rel)
        if path.suffix not in SUFFIXES:
            diags.append(loaded.diag(f"data.{key}", f"unsupported data file type {path.suffix!r}", "use .jsonl (one JSON object per line), .json (an array), .csv (a header row naming the columns) or .parquet"))
            continue
        cleaning = Cleaning.of(d)
        result = survey(path, display_path(path), (lambda value: clean_value(value, cleaning)[0]) if cleaning.active else None, extra_fields(spec), d.format == "openai" or None)
        declared = expected or (found["train"].source if "train" in found else None)
        if declared is not None and result.source is not None and result.source != declared:
            what = f"format = {declared!r}" if expected else f"{d.train} holds {declared} data"
            diags.append(loaded.diag(f"data.{key}" if not expected else "data.format", f"{what}, but {rel} holds {result.source} data", "make the format match the file (or use format = \"auto\"); every file of a spec holds one format"))
            continue
        diags += [loaded.diag(f"data.{key}", str(p), p.hint) for p in result.problems[:20]]
        if len(result.problems) > 20:
            diags.append(loaded.diag(f"data.{key}", f"... and {len(result.problems) - 20} more problems in {rel}", "run `ftc data check` for the full list"))
        found[key] = result
        if not result.problems:
            paths[key] = path
        if result.records == 0 and not result.problems:
            diags.append(loaded.diag(f"data.{key}", f"{rel} holds no examples", "add examples (in a .jsonl file, one JSON object per line)"))
    if "train" not in found:
        return diags, None
    fmt, n_train, converted = found["train"].format, found["train"].records, found["train"].converted_from
    if fmt is None:  # the train file could not be read: judge the rest by the declared format, or the other file's
        fmt = d.format if d.format not in ("auto", "openai") else found["validation"].format if "validation" in found else None
    n_val = found["validation"].records if "validation" in found else None
    if paths.keys() == found.keys() and not errors(diags):  # the files read well: look at the examples as they train
        seen = {key: _examples(loaded, path, fmt, converted is not None) for key, path in paths.items()}
        diags += _record_checks(loaded, seen, paths)
        n_train, n_val = seen["train"].kept, seen["validation"].kept if "validation" in seen else None
    if d.convert_to == "chat" and fmt not in (None, "completion"):
        diags.append(loaded.diag("data.convert_to", f"only completion data converts to chat, and {d.train} holds {fmt} data", "remove convert_to"))
    if d.system_prompt is not None and d.convert_to is None:
        diags.append(loaded.diag("data.system_prompt", "system_prompt is used only when completion data is converted to chat", 'set convert_to = "chat", or remove system_prompt (chat data carries its own system turns)'))
    kind = spec.method.kind
    on_demonstrations = METHODS[kind].trains_on == "demonstrations"
    if fmt is not None:
        diags += _check_method_data(loaded, fmt)
    if d.train_on == "completions" and fmt == "text" and on_demonstrations:
        diags.append(loaded.diag("data.train_on", "plain text has no completions to train on", 'set train_on = "all", or use chat or prompt/completion data'))
    if d.validation_split is not None:
        held = int(n_train * d.validation_split)
        if held == 0 and n_train:
            diags.append(loaded.diag("data.validation_split", f"validation_split {d.validation_split:g} of {n_train} examples holds out none", "raise it, or give a validation file"))
        n_train -= held
    if 0 < n_train < FEW_EXAMPLES:
        diags.append(loaded.diag("data.train", f"only {n_train} training examples", "fine-tuning usually needs at least 50-100; 500-1000 give meaningful gains", severity="warning"))
    elif FEW_EXAMPLES <= n_train < SOME_EXAMPLES:
        diags.append(loaded.diag("data.train", f"{n_train} training examples: enough to start, below the 500 that usually give meaningful gains", None, severity="warning"))
    batch = spec.training.batch_size
    if 0 < n_train < batch:
        diags.append(loaded.diag(
            "training.batch_size",
            f"batch_size {batch} is more than the {n_train} training examples: every step takes them all, so each step sees {n_train}, not {batch}, and an epoch is one step",
            f"lower batch_size to at most {n_train} (micro_batch_size must divide it), or add examples",
            severity="warning",
        ))
    return diags, DataSummary(fmt, n_train, n_val, converted)


def _check_method_data(loaded: LoadedSpec, fmt: str) -> Iterator[Diagnostic]:
    """The data format against what the method trains on, with the kinds (from the registry) that take the data."""
    kind, train = loaded.spec.method.kind, loaded.spec.data.train
    trains_on = METHODS[kind].trains_on
    if fmt in TRAINS_ON_FORMATS[trains_on]:
        return
    takes = next(group for group, formats in TRAINS_ON_FORMATS.items() if fmt in formats)
    takers = [f'kind = "{m.kind}"' for m in METHODS.values() if m.trains_on == takes]
    kinds, train_s = " or ".join(takers), "trains" if len(takers) == 1 else "train"
    if trains_on == "demonstrations":
        what = "preference pairs" if fmt == "preference" else "unpaired examples, each labelled desirable or not"
        use = f"use {kinds}, or chat / prompt-completion data" if kinds else f"no method ftc has trains on {fmt} data yet; give chat or prompt-completion data"
        yield loaded.diag("method.kind", f"the data is {what}, but kind = {kind!r} trains on demonstrations", use)
        return
    hint = f"give records with {TRAINS_ON_FIELDS[trains_on]}"
    if (fmt, trains_on) == ("preference", "unpaired"):
        hint = f"{UNPAIR_HINT}; or use {kinds}, which {train_s} on the pairs" if kinds else UNPAIR_HINT
    elif fmt == "unpaired" and kinds:
        hint += f"; or use {kinds}, which {train_s} on unpaired examples"
    yield loaded.diag("data.train", f"{kind.upper()} needs {TRAINS_ON_WORDS[trains_on]}, but {train} holds {fmt} data", hint)


def validate(path: Path) -> tuple[LoadedSpec | None, list[Diagnostic], DataSummary | None]:
    """Pass one, whole: parse, schema-validate, then run every check. Nothing is loaded but the data's JSON."""
    loaded, diags = parse(path)
    if loaded is None:
        return None, diags, None
    more, summary = check(loaded)
    return loaded, diags + more, summary
