"""`ftc diff`: what changed between two locks, in lines a reviewer can read.

A generic recursive walk finds every leaf that differs, so nothing that changed is ever left out.
Then the changes are told: related ones are folded into one line (a data file and its counts, the
LoRA rank and the trainable parameters), important keys get friendly labels, and the rest fall back
to their dotted key path. Lines are grouped by section, each under a header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ftc.compiler.plan.model import Plan
from ftc.compiler.plan.summary import count, params

KeyPath = tuple[str, ...]


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()

SECTIONS = (
    "project", "inputs", "packages", "model", "data", "method", "training", "hardware", "launch",
    "estimates", "evaluation", "serve", "artifacts", "other",
)
TOP_LEVEL_SECTION = {"ftc_version": "inputs", "format_version": "inputs"}
LIST_SHOWN = 10  # lists longer than this are told by their length

LABELS: dict[str, str] = {
    "project.name": "project name",
    "project.seed": "seed",
    "project.description": "description",
    "ftc_version": "ftc version",
    "format_version": "lock format version",
    "model.architecture": "architecture",
    "model.model_type": "model type",
    "model.total_params": "total parameters",
    "model.num_layers": "layers",
    "model.hidden_size": "hidden size",
    "model.vocab_size": "vocabulary size",
    "model.dtype": "weights dtype",
    "model.eos_token": "eos token",
    "model.pad_token": "pad token",
    "data.format": "data format",
    "data.max_length": "max_length",
    "data.overlong": "overlong policy",
    "data.train_on": "train on",
    "data.packing": "packing",
    "data.system_prompt": "system prompt",
    "data.converted_from": "converted from",
    "data.cleaning.dedup": "dedup",
    "data.cleaning.drop_empty_turns": "drop empty turns",
    "data.cleaning.normalize_unicode": "Unicode normalisation",
    "data.cleaning.strip_whitespace": "strip whitespace",
    "data.cleaning.removed": "examples removed by cleaning",
    "data.cleaning.changed": "examples changed by cleaning",
    "data.validation.source": "validation source",
    "data.validation.split": "validation split",
    "method.kind": "method",
    "method.adapter": "adapter",
    "method.r": "LoRA rank r",
    "method.lora_alpha": "LoRA alpha",
    "method.lora_dropout": "LoRA dropout",
    "method.target_modules": "LoRA target modules",
    "method.trainable_params": "trainable parameters",
    "method.total_params": "total parameters",
    "method.beta": "beta (the pull towards the reference)",
    "method.loss_type": "loss variant",
    "method.num_generations": "completions per prompt",
    "method.max_completion_length": "longest completion",
    "method.temperature": "sampling temperature",
    "method.rewards": "rewards",
    "training.epochs": "epochs",
    "training.max_steps": "max_steps",
    "training.steps_per_epoch": "steps per epoch",
    "training.sequences_per_epoch": "sequences per epoch",
    "training.learning_rate": "learning rate",
    "training.batch_size": "effective batch size",
    "training.micro_batch_size": "micro batch size",
    "training.gradient_accumulation_steps": "gradient accumulation steps",
    "training.scheduler": "learning-rate schedule",
    "training.warmup_steps": "warmup steps",
    "training.weight_decay": "weight decay",
    "training.optim": "optimizer",
    "training.eval_steps": "eval every (steps)",
    "training.save_steps": "save every (steps)",
    "training.logging_steps": "log every (steps)",
    "hardware.precision": "precision",
    "hardware.devices": "devices",
    "hardware.strategy": "distributed strategy",
    "estimates.peak_memory_gib": "peak memory estimate (GiB)",
    "evaluation.metrics": "metrics",
    "evaluation.gates": "gates",
    "serve.host": "serve host",
    "serve.port": "serve port",
    "serve.served_model_name": "served model name",
}
SPLIT_LABELS = {
    "records": "records",
    "examples": "examples",
    "tokens": "tokens",
    "loss_tokens": "tokens carrying loss",
    "longest": "longest example (tokens)",
    "packed_sequences": "packed sequences",
    "dropped_lines": "dropped lines",
    "truncated_lines": "truncated lines",
}
COUNT_KEYS = {"records", "examples", "tokens", "loss_tokens", "longest", "packed_sequences", "bytes", "sequences_per_epoch", "tokens_per_epoch", "vocab_size"}
PARAM_KEYS = {"total_params", "trainable_params"}
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Change:
    path: KeyPath
    before: Any  # ABSENT when the key is new
    after: Any  # ABSENT when the key was removed

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def changes(a: Any, b: Any, path: KeyPath = ()) -> list[Change]:
    """Every leaf that differs, in sorted key order. Dicts on both sides are walked; anything else is a leaf."""
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[Change] = []
        for key in sorted(set(a) | set(b)):
            found += changes(a.get(key, ABSENT), b.get(key, ABSENT), (*path, key))
        return found
    if a == b and type(a) is type(b):
        return []
    return [Change(path, a, b)]


def diff_locks(a: Plan | dict[str, Any], b: Plan | dict[str, Any]) -> list[str]:
    """Readable lines for every difference from lock `a` to lock `b`: section headers, then indented items.
    Empty when the locks are equal. The walk is over the JSON the lock holds, so that no field is ever left out."""
    a = a.to_json() if isinstance(a, Plan) else a
    b = b.to_json() if isinstance(b, Plan) else b
    pending = sorted(changes(a, b), key=lambda c: SECTIONS.index(_section(c.path)))  # inputs first: they fold in data counts
    by_path = {c.path: c for c in pending}
    told: set[KeyPath] = set()
    grouped: dict[str, list[str]] = {section: [] for section in SECTIONS}
    for change in pending:
        if change.path in told:
            continue
        section, line, used = _tell(change, by_path, a, b)
        told |= {change.path, *used}
        grouped[section].append(line)
    lines: list[str] = []
    for section in SECTIONS:
        if grouped[section]:
            lines.append(section)
            lines += [f"  {line}" for line in grouped[section]]
    return lines


# -- telling one change -----------------------------------------------------------------------------


def _section(path: KeyPath) -> str:
    head = path[0]
    if head in SECTIONS:
        return head
    return TOP_LEVEL_SECTION.get(head, "other")


def _tell(c: Change, by_path: dict[KeyPath, Change], a: dict[str, Any], b: dict[str, Any]) -> tuple[str, str, set[KeyPath]]:
    """(section, line, paths also told by this line) for one change."""
    p = c.path
    if p[:2] == ("inputs", "data") and len(p) >= 3:
        return "inputs", *_data_file(p[2], by_path, a, b)
    if p[:2] == ("inputs", "model"):
        return "inputs", *_model_input(c, by_path, a, b)
    if p[:2] == ("inputs", "templates") and len(p) == 3:
        return "inputs", _file_change(f"template {p[2]}", c), set()
    if p[:2] == ("inputs", "spec"):
        spec = b["inputs"]["spec"] if "spec" in b.get("inputs", {}) else a["inputs"]["spec"]
        if p[2:] == ("sha256",):
            return "inputs", f"spec {spec['path']} changed ({_sha_change(c)})", set()
        return "inputs", f"spec {_label(p[2:])}: {_pair(c)}", set()
    if p[:2] == ("inputs", "chat_template"):
        if p[2:] == ("sha256",):
            return "inputs", f"chat template changed ({_sha_change(c)})", set()
        return "inputs", f"chat template source: {_pair(c)}", set()
    if p[0] == "packages" and len(p) == 2:
        return "packages", f"package {p[1]}: {_value(c.before, 'not installed')} -> {_value(c.after, 'not installed')}", set()
    if p[0] == "artifacts" and len(p) == 2:
        return "artifacts", _file_change(f"generated {p[1]}", c), set()
    if p == ("method", "r"):
        return "method", *_lora_rank(c, by_path)
    if p[:2] == ("data", "splits") and len(p) >= 3:
        key = ".".join(p[3:])
        return "data", f"{p[2]} {SPLIT_LABELS.get(key, key or 'split')}: {_pair(c)}", set()
    return _section(p), f"{_label(p)}: {_pair(c)}", set()


def _label(path: KeyPath) -> str:
    """A friendly label for a key path, or its dotted form. Per-device tables get '(cpu)'/'(cuda)'."""
    dotted = ".".join(path)
    if dotted in LABELS:
        return LABELS[dotted]
    if len(path) > 1 and path[-1] in DEVICES and ".".join(path[:-1]) in LABELS:
        return f"{LABELS['.'.join(path[:-1])]} ({path[-1]})"
    return dotted


def _value(value: Any, none: str = "unset", key: str = "") -> str:
    if value is ABSENT:
        return "(absent)"
    if value is None:
        return none
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and key in PARAM_KEYS:
        return params(value)
    if isinstance(value, int) and key in COUNT_KEYS:
        return count(value)
    if isinstance(value, str):
        return value if value and value.strip() == value and "\n" not in value else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        if len(value) > LIST_SHOWN:
            return f"{len(value)} items"
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in sorted(value.items())) + "}"
    return repr(value)


def _pair(c: Change) -> str:
    key = c.path[-1] if c.path else ""
    return f"{_value(c.before, key=key)} -> {_value(c.after, key=key)}"


def _sha(value: Any) -> str:
    return f"{value[:8]}.." if isinstance(value, str) else _value(value)


def _sha_change(c: Change) -> str:
    return f"sha256 {_sha(c.before)} -> {_sha(c.after)}"


def _file_change(what: str, c: Change) -> str:
    if c.before is ABSENT:
        return f"{what} added"
    if c.after is ABSENT:
        return f"{what} removed"
    return f"{what} changed ({_sha_change(c)})"


# -- folded lines -----------------------------------------------------------------------------------


def _data_file(split: str, by_path: dict[KeyPath, Change], a: dict[str, Any], b: dict[str, Any]) -> tuple[str, set[KeyPath]]:
    """One line per data file: its path or content changed, with the split's example and token counts."""
    before = a.get("inputs", {}).get("data", {}).get(split)
    after = b.get("inputs", {}).get("data", {}).get(split)
    used = {path for path in by_path if path[:3] == ("inputs", "data", split)}
    if before is None:
        return f"{split} data added: {after['path']}", used
    if after is None:
        return f"{split} data removed: {before['path']}", used
    counts = []
    for key in ("examples", "tokens"):
        path = ("data", "splits", split, key)
        if path in by_path:
            counts.append(f"{key} {_pair(by_path[path])}")
            used.add(path)
    details = []
    if before["sha256"] != after["sha256"]:
        details.append(f"sha256 {_sha(before['sha256'])} -> {_sha(after['sha256'])}")
    if counts:
        details.append(", ".join(counts))
    tail = f" ({'; '.join(details)})" if details else ""
    if before["path"] != after["path"]:
        return f"{split} data: {before['path']} -> {after['path']}{tail}", used
    return f"{split} data {after['path']} changed{tail}", used


def _model_input(c: Change, by_path: dict[KeyPath, Change], a: dict[str, Any], b: dict[str, Any]) -> tuple[str, set[KeyPath]]:
    """A new model reference is one line; otherwise each changed file or pin of the same model."""
    before = a.get("inputs", {}).get("model", {})
    after = b.get("inputs", {}).get("model", {})
    if before.get("reference") != after.get("reference"):
        used = {path for path in by_path if path[:2] == ("inputs", "model")}
        return f"model changed: {before.get('reference')} ({before.get('kind')}) -> {after.get('reference')} ({after.get('kind')})", used
    ref = after["reference"]
    rest = c.path[2:]
    if rest[:1] == ("files",) and len(rest) == 2:
        return _file_change(f"model {ref}: file {rest[1]}", c), set()
    return f"model {ref} {'.'.join(rest)}: {_pair(c)}", set()


def _lora_rank(c: Change, by_path: dict[KeyPath, Change]) -> tuple[str, set[KeyPath]]:
    line = f"{LABELS['method.r']}: {_pair(c)}"
    trainable = by_path.get(("method", "trainable_params"))
    if trainable is None:
        return line, set()
    return f"{line} (trainable parameters {_pair(trainable)})", {trainable.path}
