"""Cleaning, as the spec asks for it ([data] dedup, drop_empty_turns, normalize_unicode, strip_whitespace),
and never silently: every example removed or changed is listed with its source line and the reason.

The steps run in a fixed order on each record: drop empty turns, normalise Unicode, strip whitespace; then,
within each file, a record that repeats an earlier one (as cleaned) is removed. Converting completion data
to chat (data.convert_to) happens after cleaning, to every record alike, and is recorded in the lock. The cleaned data is written
into the build (data/<split>.jsonl) with the report next to it (data/cleaning-report.jsonl); the training
script reads the cleaned files, and the lock holds their hashes.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ftc.compiler.data.read import Record

REPORT_NAME = "data/cleaning-report.jsonl"


@dataclass(frozen=True)
class Cleaning:
    dedup: str = "none"
    drop_empty_turns: bool = False
    normalize_unicode: str = "none"
    strip_whitespace: bool = False

    @classmethod
    def of(cls, data) -> Cleaning:
        return cls(data.dedup, data.drop_empty_turns, data.normalize_unicode, data.strip_whitespace)

    @property
    def active(self) -> bool:
        return self != Cleaning()

    def as_dict(self) -> dict[str, Any]:
        return {"dedup": self.dedup, "drop_empty_turns": self.drop_empty_turns, "normalize_unicode": self.normalize_unicode, "strip_whitespace": self.strip_whitespace}


def _map_strings(value: Any, fn) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    return value


def _folded(value: Any) -> Any:
    return _map_strings(value, lambda s: " ".join(s.split()).casefold())


def clean_value(value: Any, cleaning: Cleaning) -> tuple[Any, list[str]]:
    """One record, cleaned, and what was done to it (empty when nothing changed)."""
    changes = []
    if cleaning.drop_empty_turns and isinstance(value, dict) and isinstance(value.get("messages"), list):
        empty = [i for i, m in enumerate(value["messages"], 1) if isinstance(m, dict) and isinstance(m.get("content"), str) and not m["content"].strip()]
        if empty:
            value = {**value, "messages": [m for i, m in enumerate(value["messages"], 1) if i not in empty]}
            changes.append(f"dropped empty turn(s) {', '.join(map(str, empty))}")
    if cleaning.normalize_unicode != "none":
        normalized = _map_strings(value, lambda s: unicodedata.normalize(cleaning.normalize_unicode, s))
        if normalized != value:
            value, changes = normalized, changes + [f"Unicode {cleaning.normalize_unicode}"]
    if cleaning.strip_whitespace:
        stripped = _map_strings(value, str.strip)
        if stripped != value:
            value, changes = stripped, changes + ["stripped whitespace"]
    return value, changes


def clean_records(records: list[Record], cleaning: Cleaning, file: str) -> tuple[list[Record], list[dict[str, Any]]]:
    """The records to keep (in order, with their source lines) and one report entry per removed or changed record."""
    report: list[dict[str, Any]] = []
    return list(clean_stream(records, cleaning, file, report)), report


def clean_stream(records: Iterable[Record], cleaning: Cleaning, file: str, report: list[dict[str, Any]]) -> Iterator[Record]:
    """The records to keep, in order and with their source lines, one at a time; each removed or changed record
    is appended to `report`. Dedup keeps a 16-byte digest per kept record, nothing more."""
    first_seen: dict[bytes, int] = {}
    for record in records:
        value, changes = clean_value(record.value, cleaning)
        if cleaning.dedup != "none":
            key = hashlib.blake2b(json.dumps(value if cleaning.dedup == "exact" else _folded(value), sort_keys=True).encode(), digest_size=16).digest()
            if key in first_seen:
                report.append({"file": file, "line": record.line, "action": "removed", "reason": f"{cleaning.dedup} duplicate", "duplicate_of": first_seen[key]})
                continue
            first_seen[key] = record.line
        if changes:
            report.append({"file": file, "line": record.line, "action": "changed", "reason": "; ".join(changes)})
        yield replace(record, value=value)


def to_chat(value: dict[str, Any], system_prompt: str | None) -> dict[str, Any]:
    """A completion record as a conversation: [system,] user = prompt, assistant = completion."""
    prompt, completion = value["prompt"], value["completion"]
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    messages += completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
    return {"messages": messages}


def jsonl_line(value: Any) -> str:
    """One value as a line of the build's JSONL files: sorted keys, UTF-8 rather than ASCII escapes."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True) + "\n"


def jsonl(values: list[Any]) -> str:
    return "".join(map(jsonl_line, values))
