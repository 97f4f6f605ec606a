"""Reading examples: JSONL, JSON arrays, CSV and Parquet, streamed, every record tagged with where it is.

This is the one data module that the compiler and the runtime share. It reports problems as
`file:line: reason` (`file:row N: reason` for Parquet, which has no lines) and never drops a record
without saying so. A CSV or Parquet row becomes a record the way the generated script makes it, with
templates/prepare.py's record_from_row.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ftc.compiler.data.records import record_problems
from ftc.templates.prepare import record_from_row

Format = Literal["chat", "completion", "preference", "text"]

FORMAT_KEYS: dict[Format, frozenset[str]] = {
    "chat": frozenset({"messages"}),
    "completion": frozenset({"prompt", "completion"}),
    "preference": frozenset({"prompt", "chosen", "rejected"}),
    "text": frozenset({"text"}),
}
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
Unit = Literal["line", "row"]
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as errors="surrogateescape" keeps them


def unit_of(path: str | Path) -> Unit:
    """What numbers the records of a data file: lines, or rows for Parquet."""
    return "row" if Path(path).suffix == ".parquet" else "line"


def position(number: int, unit: Unit = "line") -> str:
    """A place in a data file as messages write it after `file:`: `12` for line 12, `row 12` for a row."""
    return f"row {number}" if unit == "row" else str(number)


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line in the source file where the record starts; for Parquet, the 1-based row
    value: Any
    unit: Unit = "line"

    @property
    def where(self) -> str:
        return position(self.line, self.unit)


@dataclass(frozen=True)
class DataProblem:
    file: str
    line: int
    message: str
    hint: str | None = None
    unit: Unit = "line"

    def __str__(self) -> str:
        return f"{self.file}:{position(self.line, self.unit)}: {self.message}"


class DuplicateKey(ValueError):
    """A JSON object names a key twice; json keeps only the last value, so the first would be lost unseen."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        raise DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)
_DUPLICATE_HINT = "JSON keeps only the last value of a repeated key, so the first would be lost without a word; remove one"


class DataError(Exception):
    def __init__(self, problems: list[DataProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def iter_records(path: Path, display: str | None = None) -> Iterator[Record | DataProblem]:
    """Yield every record of a .jsonl, .json (array), .csv or .parquet file, or a DataProblem where one is broken."""
    display = display or str(path)
    if path.suffix == ".jsonl":
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield DataProblem(display, number, f"not UTF-8: byte {raw[exc.start]:#04x} at column {exc.start + 1}", "save the file as UTF-8")
                    continue
                if not line.strip():
                    continue
                try:
                    yield Record(number, _DECODER.decode(line))
                except json.JSONDecodeError as exc:
                    yield DataProblem(display, number, f"invalid JSON: {exc.msg} (column {exc.colno})", "each line of a .jsonl file must be one complete JSON object")
                except DuplicateKey as exc:
                    yield DataProblem(display, number, f"key {exc.key!r} appears twice in one object", _DUPLICATE_HINT)
    elif path.suffix == ".json":
        yield from _iter_json_array(path, display)
    elif path.suffix == ".csv":
        yield from _iter_csv(path, display)
    elif path.suffix == ".parquet":
        yield from _iter_parquet(path, display)
    else:
        yield DataProblem(display, 1, f"unsupported file type {path.suffix!r}", "use .jsonl, .json, .csv or .parquet")


def _iter_json_array(path: Path, display: str) -> Iterator[Record | DataProblem]:
    """The records of a JSON array, each with the line it starts on. The text is read whole (a JSON array has
    no record boundaries to stream by); JSONL is the format for files too large for memory."""
    text = path.read_text(encoding="utf-8")
    i = _skip_ws(text, 0)
    if not text.startswith("[", i):
        yield DataProblem(display, text.count("\n", 0, i) + 1, "a .json data file must hold one array of records")
        return
    i = _skip_ws(text, i + 1)
    line, counted = 1, 0  # lines are counted as the reading moves on, never from the start again
    while i < len(text) and text[i] != "]":
        line, counted = line + text.count("\n", counted, i), i
        try:
            value, i = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            yield DataProblem(display, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})", "fix the JSON at this position")
            return
        except DuplicateKey as exc:
            yield DataProblem(display, line, f"key {exc.key!r} appears twice in one object", _DUPLICATE_HINT)
            _, i = json.JSONDecoder().raw_decode(text, i)  # the same text, read past without the check
        else:
            yield Record(line, value)
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)


def _iter_csv(path: Path, display: str) -> Iterator[Record | DataProblem]:
    """The rows of a CSV file under its header row, each with the line it starts on (the header is line 1).

    The stdlib csv reader is used rather than datasets.Dataset.from_csv, which parses with pandas and keeps no
    line numbers. Fed one physical line at a time, the reader shows which lines each row took, so a row with a
    quoted cell that spans lines is still named by its first line. Bytes that are not UTF-8 are kept as escapes
    while reading, and reported at their own line.
    """
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        taken: list[str] = []  # the physical lines of the row being read

        def lines() -> Iterator[str]:
            for text in fh:
                taken.append(text)
                yield text

        reader = csv.reader(lines())
        header: list[str] | None = None
        while True:
            taken.clear()
            try:
                row = next(reader, None)
            except csv.Error as exc:
                yield DataProblem(display, reader.line_num, f"invalid CSV: {exc}", "fix the quoting of this row")
                return
            if row is None:
                return
            start = reader.line_num - len(taken) + 1
            bad = _not_utf8(display, start, taken)
            if bad is not None:
                yield bad
                if header is None:
                    return
            elif header is None:
                header = row
                if not header or len(set(header)) != len(header):
                    yield DataProblem(display, start, "the header row must name each column once", "start the file with a row like: prompt,completion")
                    return
            elif not row:
                continue  # a blank line
            elif len(row) != len(header):
                yield DataProblem(display, start, f"row has {len(row)} cells, the header has {len(header)}", "quote a cell that holds a comma or a line break")
            else:
                yield _table_record(display, start, dict(zip(header, row)), "line")


def _not_utf8(display: str, start: int, lines: list[str]) -> DataProblem | None:
    for number, text in enumerate(lines, start=start):
        found = _NOT_UTF8.search(text)
        if found:
            byte = ord(found.group()) - 0xDC00
            return DataProblem(display, number, f"invalid UTF-8: byte 0x{byte:02x} (column {found.start() + 1})", "save the file as UTF-8")
    return None


def _iter_parquet(path: Path, display: str) -> Iterator[Record | DataProblem]:
    """The rows of a Parquet file, numbered from 1 (a columnar file has no lines). Read in batches with pyarrow,
    which datasets reads Parquet with, so a large file is never held whole."""
    import pyarrow
    import pyarrow.parquet

    number = 0
    try:
        for batch in pyarrow.parquet.ParquetFile(path).iter_batches():
            for row in batch.to_pylist():
                number += 1
                yield _table_record(display, number, row, "row")
    except (pyarrow.ArrowException, OSError, UnicodeDecodeError) as exc:
        yield DataProblem(display, number + 1, f"cannot read the Parquet file: {exc}", "check that it is a complete Parquet file", "row")


def _table_record(display: str, number: int, row: dict[str, Any], unit: Unit) -> Record | DataProblem:
    try:
        return Record(number, record_from_row(row), unit)
    except ValueError as exc:
        return DataProblem(display, number, str(exc), "a messages cell holds the list of messages as JSON text", unit)


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


def survey(path: Path, display: str, transform: Callable[[Any], Any] | None = None, extra_fields: tuple[str, ...] = ()) -> Survey:
    """Count the records of a data file and check each one against the format of its first record. `transform`
    (the spec's cleaning) is applied to each record before it is checked, as it is before training;
    `extra_fields` are fields allowed besides the format's own."""
    fmt: Format | None = None
    count = 0
    problems: list[DataProblem] = []
    for item in iter_records(path, display):
        if isinstance(item, DataProblem):
            problems.append(item)
            continue
        if transform is not None:
            item = Record(item.line, transform(item.value), item.unit)
        found = detect_format(item.value)
        if fmt is None:
            fmt = found
        if found is None:
            problems.append(
                DataProblem(display, item.line, _describe_unknown(item.value), "see `format` in the spec reference", item.unit)
            )
        elif found != fmt:
            problems.append(
                DataProblem(display, item.line, f"record is {found} data, but the file is {fmt} data", "every record of a file must have the same format", item.unit)
            )
        else:
            found_problems = record_problems(item.value, found, extra_fields)
            problems.extend(DataProblem(display, item.line, message, hint, item.unit) for message, hint in found_problems)
            count += not found_problems
    return Survey(fmt, count, tuple(problems))


def _describe_unknown(value: Any) -> str:
    if not isinstance(value, dict):
        return f"a record must be a JSON object, got {type(value).__name__}"
    keys = ", ".join(sorted(value)) or "no keys"
    return f"record has {keys}; expected messages, prompt+completion, prompt+chosen+rejected, or text"
