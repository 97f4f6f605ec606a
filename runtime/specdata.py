"""A spec's data as the verbs that add examples to it see it (`ftc data from-logs`, `ftc data synthesize`): the
train file's records, the held-out split's prompts, and the checks every new example must pass.

The checks are `ftc data check`'s: the record against the spec's format (compiler/data/records.py), then tokenized
with the spec's tokenizer and chat template under max_length and the overlong policy (compiler/data/tokens.py, the
generated script's own code). Leakage is judged on prompts: two examples share a prompt when their user turns (or
string prompts) are equal after case folding and collapsing whitespace, so an example that asks a held-out question
is refused whatever its answer or system turn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.data.clean import to_chat
from ftc.compiler.data.openai import read_records
from ftc.compiler.data.read import DataProblem, Record, record_format
from ftc.compiler.data.records import record_problems
from ftc.compiler.data.splits import DataSource
from ftc.compiler.diagnostics import errors, read_source, render
from ftc.compiler.spec.checks import digest, extra_fields, final_answer, label_of, normalize, validate
from ftc.compiler.spec.validate import LoadedSpec, display_path

WRITABLE = ("chat", "completion")  # the formats new examples are written in


class SpecDataError(Exception):
    """The spec or its data cannot take new examples; the message says why and what to do."""


@dataclass
class SpecData:
    loaded: LoadedSpec
    root: Path
    format: str  # the train file's format: chat or completion
    train_path: Path
    train: list[Record]  # the train file's records as read, to copy into a new data version
    held_out: dict[bytes, str] = field(default_factory=dict)  # prompt key -> where the held-out example is
    held_out_texts: list[tuple[str, str]] = field(default_factory=list)  # (prompt text, where), for near duplicates
    train_seen: dict[bytes, int] = field(default_factory=dict)  # normalised record digest -> train line
    train_examples: list[Record] = field(default_factory=list)  # the train split as it trains (seeds for synthesis)
    labels: set[str] = field(default_factory=set)  # the label field's values in train
    held_out_source: str = "none"  # "validation", "split" or "none"
    warnings: list[str] = field(default_factory=list)

    @property
    def spec(self):
        return self.loaded.spec

    @property
    def extra(self) -> tuple[str, ...]:
        return extra_fields(self.spec)

    def sha256(self) -> dict[str, dict[str, str]]:
        """The spec's and the train file's sha256, by their paths."""
        return {
            "spec": {display_path(self.loaded.path): file_sha256(self.loaded.path)},
            "train": {display_path(self.train_path): file_sha256(self.train_path)},
        }


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def open_spec(path: Path, root: Path) -> SpecData:
    """Validate the spec as `ftc data check` does and read what new examples are judged against."""
    loaded, diags, summary = validate(path)
    if loaded is None or errors(diags):
        text = render(errors(diags), {display_path(path): read_source(path)}) if diags else f"{path}: cannot be read"
        raise SpecDataError(f"{text}\n{display_path(path)}: fix the spec (and its data) first: `ftc data check {path}`")
    fmt = summary.format if summary else None
    d = loaded.spec.data
    if fmt not in WRITABLE:
        raise SpecDataError(
            f"{display_path(path)}: data.train holds {fmt or 'no'} data; new examples are written as chat or completion "
            "records, for a spec that trains on demonstrations"
        )
    train_path = loaded.resolve(d.train)
    shown = display_path(train_path)
    train: list[Record] = []
    for item in read_records(train_path, shown, d.format == "openai" or None):
        if isinstance(item, DataProblem):
            raise SpecDataError(f"{item}; fix the train file first (`ftc data check {path}`)")
        train.append(item)
    data = SpecData(loaded, root, fmt, train_path, train)
    for record in train:
        data.train_seen.setdefault(digest(normalize(record.value)), record.line)
    source = DataSource(loaded, root)
    for split, key, records in source.splits():
        for i, record in enumerate(records()):
            if split == "train":
                data.train_examples.append(record)
                label = label_of(record.value, _trained_format(data), d.label_field) if d.label_field else None
                if label is not None:
                    data.labels.add(label)
                continue
            where = f"{source.display(key)}:{record.line}" + (f" (held out by validation_split, #{i + 1})" if key == "train" else "")
            data.held_out.setdefault(prompt_key(record.value), where)
            data.held_out_texts.append((prompt_text(record.value), where))
    if d.validation is not None:
        data.held_out_source = "validation"
    elif d.validation_split is not None:
        data.held_out_source = "split"
        data.warnings.append(
            f"data.validation_split holds out {d.validation_split:g} of the train file by position: a longer train file "
            "holds out other examples, so evaluations before and after are not on the same examples; to keep them "
            "comparable, write the current held-out split to a file and name it as data.validation"
        )
    else:
        data.warnings.append("the spec has no held-out split (data.validation or validation_split): no leakage to check")
    return data


def _trained_format(data: SpecData) -> str:
    return "chat" if data.spec.data.convert_to == "chat" else data.format


def user_turns(value: Any) -> list[str]:
    """The user side of an example: its user turns, or its string prompt (or text)."""
    if not isinstance(value, dict):
        return []
    prompt = value.get("messages", value.get("prompt", value.get("text")))
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list):
        return [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)]
    return []


def prompt_key(value: Any) -> bytes:
    """The prompt's identity for leakage: its user turns, case-folded and with whitespace collapsed."""
    return digest(normalize(user_turns(value)))


def prompt_text(value: Any) -> str:
    return " ".join(normalize(user_turns(value)))  # type: ignore[arg-type]


def record_digest(value: Any) -> bytes:
    """A whole example's identity for duplicates: case-folded, whitespace collapsed."""
    return digest(normalize(value))


@dataclass
class Checker:
    """The spec's own checks on new examples: format and fields, then tokens under max_length."""

    data: SpecData
    tokenizer: Any = None
    chat_template: str | None = None
    note: str | None = None  # why tokens are not checked, when they are not

    @classmethod
    def of(cls, data: SpecData) -> Checker:
        from ftc.compiler.build.compile import _is_hub, chat_template_for
        from ftc.compiler.hashing import FileHasher
        from ftc.compiler.plan.inputs import InputError, resolve_model
        from ftc.compiler.plan.modelinfo import load_tokenizer, tokenizer_info

        loaded = data.loaded
        try:
            with FileHasher() as hasher:
                source = resolve_model(loaded.spec.model.base, loaded.spec.model.revision, loaded.base_dir, data.root, hasher, _is_hub(loaded))
            tokenizer = load_tokenizer(source)
        except InputError as exc:
            return cls(data, note=f"tokens not checked: {exc.message}")
        template, _ = chat_template_for(loaded, tokenizer_info(tokenizer), data.root)
        return cls(data, tokenizer, template)

    def problems(self, values: list[dict[str, Any]]) -> tuple[list[list[str]], set[int]]:
        """Each value's problems (empty when it may train), in order, and which of them training would truncate
        (data.overlong = "truncate": kept, and said so)."""
        from ftc.compiler.data.tokens import measure

        d = self.data.spec.data
        out: list[list[str]] = []
        for value in values:
            found = record_format(value, self.data.format, self.data.extra)
            if found != self.data.format:
                out.append([f"not a {self.data.format} record (it looks like {found or 'no format'})"])
                continue
            out.append([message + (f" ({hint})" if hint else "") for message, hint in record_problems(value, found, self.data.extra)])
        if self.tokenizer is None:
            return out, set()
        fmt = _trained_format(self.data)
        records = [Record(i, to_chat(v, d.system_prompt) if d.convert_to == "chat" else v) for i, v in enumerate(values) if not out[i]]
        if not records:
            return out, set()
        stats = measure("new", records, self.tokenizer, self.chat_template, fmt, max_length=d.max_length, overlong=d.overlong,
                        train_on_all=d.train_on == "all", workers=1)
        for line, n in stats.overlong + stats.dropped:
            out[line].append(f"{n} tokens, more than data.max_length = {d.max_length} (data.overlong = {d.overlong!r})")
        for line in stats.no_loss:
            out[line].append("no token carries loss")
        for line, why in stats.failed:
            out[line].append(f"cannot be tokenized: {why}")
        return out, {line for line, _ in stats.truncated}


def answer_problems(data: SpecData, value: dict[str, Any], validator) -> list[str]:
    """The json_schema metric's checks on a new example's answer, and its label against train's labels."""
    fmt = data.format
    problems = []
    answer = final_answer(value, fmt)
    if validator is not None:
        try:
            parsed = json.loads(answer) if answer is not None else None
        except ValueError:
            problems.append("the answer is not JSON, and evaluation.json_schema expects JSON")
        else:
            if parsed is None and answer is None:
                problems.append("no answer to check against evaluation.json_schema")
            else:
                error = next(iter(validator.iter_errors(parsed)), None)
                if error is not None:
                    where = "/".join(map(str, error.absolute_path)) or "the answer"
                    problems.append(f"the answer does not match evaluation.json_schema at {where}: {error.message}")
    label_field = data.spec.data.label_field
    if label_field:
        label = label_of(value, fmt, label_field)
        if label is None:
            problems.append(f"no {label_field!r} label (data.label_field)")
        elif data.labels and label not in data.labels:
            problems.append(f"label {label[:60]!r} is not one train uses ({', '.join(sorted(data.labels)[:10])})")
    return problems


def schema_validator(data: SpecData):
    """The json_schema metric's validator, when the spec names a schema; None otherwise."""
    rel = data.spec.evaluation.json_schema
    if not rel:
        return None
    from ftc.runtime.evaluate.metrics import schema_validator as build

    path = data.loaded.resolve(rel)
    from jsonschema.exceptions import SchemaError

    try:
        return build(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, SchemaError) as exc:
        raise SpecDataError(f"{display_path(path)}: evaluation.json_schema cannot be read as a JSON Schema ({exc})") from exc

