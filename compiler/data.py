"""Reading examples: JSONL and JSON arrays, streamed, every record tagged with its file line.

This is the one data module that the compiler and the runtime share. It reports problems as
`file:line: reason` and never drops a record without saying so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .records import record_problems

Format = Literal["chat", "completion", "preference", "text"]

FORMAT_KEYS: dict[Format, frozenset[str]] = {
    "chat": frozenset({"messages"}),
    "completion": frozenset({"prompt", "completion"}),
    "preference": frozenset({"prompt", "chosen", "rejected"}),
    "text": frozenset({"text"}),
}
SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line in the source file where the record starts
    value: Any


@dataclass(frozen=True)
class DataProblem:
    file: str
    line: int
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class DataError(Exception):
    def __init__(self, problems: list[DataProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def iter_records(path: Path, display: str | None = None) -> Iterator[Record | DataProblem]:
    """Yield every record of a .jsonl or .json (array) file, or a DataProblem where one is broken."""
    display = display or str(path)
    if path.suffix == ".jsonl":
        with path.open("r", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield Record(number, json.loads(line))
                except json.JSONDecodeError as exc:
                    yield DataProblem(display, number, f"invalid JSON: {exc.msg} (column {exc.colno})", "each line of a .jsonl file must be one complete JSON object")
    elif path.suffix == ".json":
        yield from _iter_json_array(path, display)
    else:
        yield DataProblem(display, 1, f"unsupported file type {path.suffix!r}", "use .jsonl or .json")


def _iter_json_array(path: Path, display: str) -> Iterator[Record | DataProblem]:
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    i = _skip_ws(text, 0)
    if not text.startswith("[", i):
        yield DataProblem(display, text.count("\n", 0, i) + 1, "a .json data file must hold one array of records")
        return
    i = _skip_ws(text, i + 1)
    while i < len(text) and text[i] != "]":
        line = text.count("\n", 0, i) + 1
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            yield DataProblem(display, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})", "fix the JSON at this position")
            return
        yield Record(line, value)
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def detect_format(value: Any) -> Format | None:
    """The format a record is in, judged by its keys; None when it fits none."""
    if not isinstance(value, dict):
        return None
    keys = set(value)
    for fmt in ("preference", "chat", "completion", "text"):
        if FORMAT_KEYS[fmt] <= keys:  # type: ignore[index]
            return fmt  # type: ignore[return-value]
    return None


@dataclass(frozen=True)
class Survey:
    """What a quick pass over a data file found: its format and how many usable records it has."""

    format: Format | None
    records: int
    problems: tuple[DataProblem, ...]


def survey(path: Path, display: str) -> Survey:
    """Count the records of a data file and check each one against the format of its first record."""
    fmt: Format | None = None
    count = 0
    problems: list[DataProblem] = []
    for item in iter_records(path, display):
        if isinstance(item, DataProblem):
            problems.append(item)
            continue
        found = detect_format(item.value)
        if fmt is None:
            fmt = found
        if found is None:
            problems.append(
                DataProblem(display, item.line, _describe_unknown(item.value), "see `format` in the spec reference")
            )
        elif found != fmt:
            problems.append(
                DataProblem(display, item.line, f"record is {found} data, but the file is {fmt} data", "every record of a file must have the same format")
            )
        else:
            found_problems = record_problems(item.value, found)
            problems.extend(DataProblem(display, item.line, message, hint) for message, hint in found_problems)
            count += not found_problems
    return Survey(fmt, count, tuple(problems))


def _describe_unknown(value: Any) -> str:
    if not isinstance(value, dict):
        return f"a record must be a JSON object, got {type(value).__name__}"
    keys = ", ".join(sorted(value)) or "no keys"
    return f"record has {keys}; expected messages, prompt+completion, prompt+chosen+rejected, or text"
