"""Reading examples: JSONL, JSON arrays, CSV and Parquet, streamed, every record tagged with where it is.

This is the one data module that the compiler and the runtime share. It reports problems as
`file:line: reason` (`file:row N: reason` for Parquet, which has no lines) and never drops a record
without saying so. A CSV or Parquet row becomes a record the way the generated script makes it, with
templates/prepare.py's record_from_row. OpenAI's fine-tuning records are read as ftc's in data/openai.py (survey's
`openai`; a file whose first record has input, preferred_output and non_preferred_output is detected as OpenAI's).

The reading is strict where the generated script's reader (its read_records: json.loads, csv) would fail or
read something else, and where Python's json takes what JSON forbids:
- A UTF-8 byte order mark (BOM) at the start of a .jsonl or .json file is an error: the script reads them
  with encoding="utf-8", and json.loads refuses the BOM. (A CSV file may have one: both read CSV as utf-8-sig.)
  UTF-16 text and NUL bytes are errors too: a text data file holds neither.
- Lines end at LF, CRLF or a bare CR, as the script's text-mode reading splits them.
- NaN and Infinity, numbers too large for a float or too long for an int, strings that hold a lone UTF-16
  surrogate (an escape like \\ud800 that UTF-8 cannot encode) and values nested more than MAX_DEPTH levels
  are errors, each at its line; so are Parquet cells that are no JSON value (timestamps, bytes, NaN).
- A .json file must be one array, its records separated by commas, with nothing after it.
- A line longer than MAX_LINE_BYTES is named and skipped unread, so a file without line breaks never fills
  the memory; a CSV cell longer than the csv module's field limit is named as such (the script's csv reader
  has the same limit).
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ftc.compiler.data.records import (
    DEPTH_HINT,
    MAX_DEPTH,
    describe_unknown,
    not_a_record,
    record_problems,
)
from ftc.templates.prepare import record_from_row

Format = Literal["chat", "completion", "preference", "unpaired", "text"]

FORMAT_KEYS: dict[Format, frozenset[str]] = {
    "chat": frozenset({"messages"}),
    "completion": frozenset({"prompt", "completion"}),
    "preference": frozenset({"prompt", "chosen", "rejected"}),
    "unpaired": frozenset({"prompt", "completion", "label"}),
    "text": frozenset({"text"}),
}
DETECTION_ORDER: tuple[Format, ...] = ("preference", "unpaired", "chat", "completion", "text")  # wider key sets first
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
Unit = Literal["line", "row"]
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as errors="surrogateescape" keeps them
MAX_LINE_BYTES = 64 * 2**20  # a longer line of a .jsonl file is skipped unread, and named
BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-32's start with these too
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # text that may decode to a surrogate
_BOM_HINT = "save the file as UTF-8 without a BOM (the training script's JSON reader refuses it too)"
_NUL_HINT = "a text file holds no NUL bytes: this looks like UTF-16 text or a binary file; save the data as UTF-8 text"


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


class NotJSON(ValueError):
    """Text that Python's json reads but that is no JSON, or no record: a repeated key, NaN, a number too large,
    a lone surrogate, nesting too deep. Raised while decoding; the reader turns it into a DataProblem."""

    def __init__(self, message: str, hint: str) -> None:
        self.message, self.hint = message, hint
        super().__init__(message)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise NotJSON(f"key {key!r} appears twice in one object", "JSON keeps only the last value of a repeated key, so the first would be lost without a word; remove one")
    return value


def _constant(name: str) -> Any:
    raise NotJSON(f"{name} is not JSON (Python and pandas write it for a missing or infinite number)", "write null, a number or a string instead")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotJSON(f"number {text[:40]} is too large for a floating-point number", "write a smaller number, or the value as a string")
    return value


def _int(text: str) -> int:
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    digits = len(text.lstrip("-"))
    if limit and digits > limit:
        raise NotJSON(f"a number with {digits} digits, more than the {limit} that Python reads", "write a number this long as a string")
    return int(text)


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_constant, parse_float=_float, parse_int=_int)
_SKIPPER = json.JSONDecoder(parse_constant=str, parse_float=str, parse_int=str)  # reads past what _DECODER refused


def decode_json(text: str, start: int = 0) -> tuple[Any, int]:
    """One JSON value of `text` from `start`, and where it ends: JSONDecodeError where the text is no JSON, NotJSON
    where it is no record (see NotJSON)."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except RecursionError:
        raise NotJSON(f"the record is nested more than {MAX_DEPTH} levels deep", DEPTH_HINT) from None
    deep = text.count("[", start, end) + text.count("{", start, end) > MAX_DEPTH
    if deep or _SURROGATE_ESCAPE.search(text, start, end):
        problem = not_a_record(value)
        if problem:
            raise NotJSON(f"the record {problem[0]}", problem[1])
    return value, end


class DataError(Exception):
    def __init__(self, problems: list[DataProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def iter_records(path: Path, display: str | None = None) -> Iterator[Record | DataProblem]:
    """Yield every record of a .jsonl, .json (array), .csv or .parquet file, or a DataProblem where one is broken."""
    display = display or str(path)
    if path.suffix in (".jsonl", ".json", ".csv"):
        with path.open("rb") as fh:
            start = fh.read(4)
        if start.startswith(UTF16_BOMS):
            yield DataProblem(display, 1, "the file is UTF-16 (or UTF-32) text: it starts with that encoding's byte order mark", "save it as UTF-8")
            return
    if path.suffix == ".jsonl":
        yield from _iter_jsonl(path, display)
    elif path.suffix == ".json":
        yield from _iter_json_array(path, display)
    elif path.suffix == ".csv":
        yield from _iter_csv(path, display)
    elif path.suffix == ".parquet":
        yield from _iter_parquet(path, display)
    else:
        yield DataProblem(display, 1, f"unsupported file type {path.suffix!r}", "use .jsonl, .json, .csv or .parquet")


def _iter_jsonl(path: Path, display: str) -> Iterator[Record | DataProblem]:
    """One record a line. The file is read in binary, a line at a time and at most MAX_LINE_BYTES of it."""
    number = 0
    with path.open("rb") as fh:
        while raw := fh.readline(MAX_LINE_BYTES + 1):
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                number += 1
                size = f"{MAX_LINE_BYTES // 2**20} MiB" if MAX_LINE_BYTES >= 2**20 else f"{MAX_LINE_BYTES // 2**10} KiB"
                yield DataProblem(display, number, f"line {number} is longer than {size}: it is not read", "one record per line; split it into several examples, or check that the file has line breaks")
                while (rest := fh.readline(2**20)) and not rest.endswith(b"\n"):
                    pass
                continue
            if number == 0 and raw.startswith(BOM):
                yield DataProblem(display, 1, "the file starts with a UTF-8 byte order mark (BOM), which JSON does not allow", _BOM_HINT)
                raw = raw[len(BOM):]
            for piece in _split_cr(raw):
                number += 1
                item = _jsonl_record(display, number, piece)
                if item is not None:
                    yield item


def _split_cr(raw: bytes) -> list[bytes]:
    """A line read up to \\n, split where a bare \\r ends a line too (as text-mode reading splits it)."""
    if b"\r" not in raw:
        return [raw]
    body = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith((b"\n", b"\r")) else raw
    return body.split(b"\r")


def _jsonl_record(display: str, number: int, raw: bytes) -> Record | DataProblem | None:
    if b"\x00" in raw:
        return DataProblem(display, number, f"NUL byte at column {raw.index(0) + 1}", _NUL_HINT)
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DataProblem(display, number, f"not UTF-8: byte {raw[exc.start]:#04x} at column {exc.start + 1}", "save the file as UTF-8")
    start = _skip_ws(line, 0)
    if start == len(line) or not line.strip():  # blank, as the script's `line.strip()` sees it
        return None
    try:
        value, end = decode_json(line, start)
        if _skip_ws(line, end) != len(line):
            raise json.JSONDecodeError("Extra data", line, end)
    except json.JSONDecodeError as exc:
        if line.startswith("\ufeff"):
            return DataProblem(display, number, "a UTF-8 byte order mark (BOM) starts this line, as where files that had one were joined", "remove it: save each file as UTF-8 without a BOM before joining them")
        hint = "each line of a .jsonl file must be one complete JSON object"
        if number == 1 and line.strip() == "[":
            hint = "this file looks like one JSON array: name it .json, or write one object a line"
        return DataProblem(display, number, f"invalid JSON: {exc.msg} (column {exc.colno})", hint)
    except NotJSON as exc:
        return DataProblem(display, number, exc.message, exc.hint)
    return Record(number, value)


def _iter_json_array(path: Path, display: str) -> Iterator[Record | DataProblem]:
    """The records of a JSON array, each with the line it starts on. The text is read whole (a JSON array has
    no record boundaries to stream by); JSONL is the format for files too large for memory."""
    data = path.read_bytes()
    if data.startswith(BOM):
        yield DataProblem(display, 1, "the file starts with a UTF-8 byte order mark (BOM), which JSON does not allow", _BOM_HINT)
        data = data[len(BOM):]
    bad = data.find(b"\x00")  # the first byte that no UTF-8 text holds
    if bad < 0:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = exc.start
    if bad >= 0:
        line, column = data.count(b"\n", 0, bad) + 1, bad - data.rfind(b"\n", 0, bad)
        if data[bad] == 0:
            yield DataProblem(display, line, f"NUL byte at column {column}", _NUL_HINT)
        else:
            yield DataProblem(display, line, f"not UTF-8: byte {data[bad]:#04x} at column {column}", "save the file as UTF-8")
        return
    lines = _Lines(text)
    i = _skip_ws(text, 0)
    if not text.startswith("[", i):
        yield DataProblem(display, lines.at(i), "a .json data file must hold one array of records", "write [ {...}, {...} ], or one object a line in a .jsonl file")
        return
    i = _skip_ws(text, i + 1)
    while not text.startswith("]", i):
        line = lines.at(i)
        if i >= len(text):
            end = len(text.rstrip())
            yield DataProblem(display, lines.at(end), "the array is not closed: the file ends before its ]", "the file may be cut short; end the array with ]")
            return
        try:
            value, i = decode_json(text, i)
        except json.JSONDecodeError as exc:
            yield DataProblem(display, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})", "fix the JSON at this position (the records after it are read once it is fixed)")
            return
        except NotJSON as exc:
            try:
                _, i = _SKIPPER.raw_decode(text, i)  # the same text, read past without the checks
            except RecursionError:
                yield DataProblem(display, line, exc.message, f"{exc.hint} (the records after it are read once it is fixed)")
                return
            yield DataProblem(display, line, exc.message, exc.hint)
        else:
            yield Record(line, value)
        i = _skip_ws(text, i)
        if text.startswith(",", i):
            comma, i = i, _skip_ws(text, i + 1)
            if text.startswith("]", i):
                yield DataProblem(display, lines.at(comma), "a comma after the last record: JSON allows none", "remove the comma before the closing ]")
        elif not text.startswith("]", i) and i < len(text):
            yield DataProblem(display, lines.at(i), "expected , or ] after a record", "separate the records with commas (the records after this one are read once it is fixed)")
            return
    i = _skip_ws(text, i + 1)
    if i < len(text):
        yield DataProblem(display, lines.at(i), "text after the end of the array", "a .json data file holds exactly one array: join the arrays, or write one object a line in a .jsonl file")


class _Lines:
    """Line numbers of positions in a text, counted as the reading moves on (never from the start again)."""

    def __init__(self, text: str) -> None:
        self.text, self.line, self.counted = text, 1, 0

    def at(self, i: int) -> int:
        if i < self.counted:
            return self.text.count("\n", 0, i) + 1
        self.line, self.counted = self.line + self.text.count("\n", self.counted, i), i
        return self.line


def _iter_csv(path: Path, display: str) -> Iterator[Record | DataProblem]:
    """The rows of a CSV file under its header row, each with the line it starts on (the header is line 1).

    The stdlib csv reader is used rather than datasets.Dataset.from_csv, which parses with pandas and keeps no
    line numbers. Fed one physical line at a time, the reader shows which lines each row took, so a row with a
    quoted cell that spans lines is still named by its first line. Bytes that are not UTF-8 are kept as escapes
    while reading, and reported at their own line. A cell longer than csv.field_size_limit() stops the reading:
    the script's csv reader has the same limit.
    """
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        taken: list[str] = []  # the physical lines of the row being read

        def lines() -> Iterator[str]:
            for text in fh:
                taken.append(text)
                yield text

        reader = csv.reader(lines(), strict=True)  # a quote left open to the end, or text after a closing quote
        header: list[str] | None = None
        while True:
            taken.clear()
            try:
                row = next(reader, None)
            except csv.Error as exc:
                start = reader.line_num - len(taken) + 1  # the first line of the row it is in
                if "field larger than field limit" in str(exc):
                    yield DataProblem(
                        display, start, f"a cell is longer than {csv.field_size_limit():,} characters, the most Python's csv reader (and the training script) reads",
                        "put long texts in a .jsonl file, one JSON object a line; the rest of the file is not read until then",
                    )
                else:
                    yield DataProblem(display, start, f"invalid CSV: {exc}", "fix the quoting of this row; the rest of the file is not read until then")
                return
            if row is None:
                return
            start = reader.line_num - len(taken) + 1
            bad = _bad_text(display, start, taken)
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


def _bad_text(display: str, start: int, lines: list[str]) -> DataProblem | None:
    for number, text in enumerate(lines, start=start):
        if "\x00" in text:
            return DataProblem(display, number, f"NUL byte at column {text.index(chr(0)) + 1}", _NUL_HINT)
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
    """A row as a record, or the problem of its first cell that is no JSON value (see not_a_record)."""
    try:
        record = record_from_row(row)
    except RecursionError:
        return DataProblem(display, number, f"the messages cell is nested more than {MAX_DEPTH} levels deep", DEPTH_HINT, unit)
    except ValueError as exc:
        message = str(exc)
        if "integer string conversion" in message:  # Python's limit on the digits of an int
            message = "the messages cell holds a number too long to read"
        return DataProblem(display, number, message, "a messages cell holds the list of messages as JSON text", unit)
    for column, cell in record.items():
        problem = not_a_record(cell, tabular=True)
        if problem:
            return DataProblem(display, number, f"column {column!r} {problem[0]}", problem[1], unit)
    return Record(number, record, unit)


def _skip_ws(text: str, i: int) -> int:
    """Where the JSON whitespace from i ends."""
    return _WHITESPACE.match(text, i).end()  # type: ignore[union-attr]


def detect_format(value: Any, extra_fields: tuple[str, ...] = ()) -> Format | None:
    """The format a record is in, judged by its keys; None when it fits none. prompt + completion + label is
    unpaired data, unless the spec names `label` as its label field (`extra_fields`) and the label is no boolean:
    then it is completion data with a label to count."""
    if not isinstance(value, dict):
        return None
    keys = set(value)
    for fmt in DETECTION_ORDER:
        if FORMAT_KEYS[fmt] <= keys:
            if fmt == "unpaired" and "label" in extra_fields and not isinstance(value["label"], bool):
                continue
            return fmt
    return None


def record_format(value: Any, file_format: Format | None, extra_fields: tuple[str, ...] = ()) -> Format | None:
    """The format a record is judged by in a file whose format (set by its first record) is `file_format`: a
    record that has the file format's keys is that format's record, its other keys unknown fields (a completion
    file's record with a label has an extra field; it is not unpaired data in the wrong file)."""
    found = detect_format(value, extra_fields)
    if file_format is not None and found != file_format and isinstance(value, dict) and FORMAT_KEYS[file_format] <= set(value):
        return file_format
    return found


def _mismatch(value: dict[str, Any], found: Format, fmt: Format) -> tuple[str, str]:
    if (found, fmt) == ("completion", "unpaired"):
        typo = next((k for k in sorted(value) if k not in FORMAT_KEYS[fmt] and difflib.get_close_matches(k, ["label"], cutoff=0.6)), None)
        hint = f"did you mean 'label'? {typo!r} is no field of unpaired data" if typo else 'add "label": true (a desirable completion) or false (an undesirable one)'
        return "record has no label, which every unpaired example has", hint
    return f"record is {found} data, but the file is {fmt} data", "every record of a file must have the same format"


@dataclass(frozen=True)
class Survey:
    """What a quick pass over a data file found: its format and how many usable records it has."""

    format: Format | None  # the format the records train as
    records: int
    problems: tuple[DataProblem, ...]
    converted_from: str | None = None  # "openai": the file holds OpenAI's records, read as `format` (data/openai.py)

    @property
    def source(self) -> str | None:
        """The format the file holds: "openai", or ftc's."""
        return self.converted_from or self.format


def survey(path: Path, display: str, transform: Callable[[Any], Any] | None = None, extra_fields: tuple[str, ...] = (), openai: bool | None = None) -> Survey:
    """Count the records of a data file and check each one against the format of its first record. `transform`
    (the spec's cleaning) is applied to each record before it is checked, as it is before training;
    `extra_fields` are fields allowed besides the format's own. `openai` reads OpenAI's records as ftc's (None:
    when the first record is OpenAI DPO data; see data/openai.py)."""
    from ftc.compiler.data.openai import Reading  # which reads with this module's readers

    fmt: Format | None = None
    count = 0
    problems: list[DataProblem] = []
    reading = Reading(openai)
    for item in reading.records(path, display):
        if isinstance(item, DataProblem):
            problems.append(item)
            continue
        if transform is not None:
            item = Record(item.line, transform(item.value), item.unit)
        found = record_format(item.value, fmt, extra_fields)
        if fmt is None:
            fmt = found
        if found is None:
            problems.append(DataProblem(display, item.line, *describe_unknown(item.value, path.suffix), item.unit))
        elif found != fmt:
            problems.append(DataProblem(display, item.line, *_mismatch(item.value, found, fmt), item.unit))  # type: ignore[arg-type]
        else:
            found_problems = reading.words(record_problems(item.value, found, extra_fields))
            problems.extend(DataProblem(display, item.line, message, hint, item.unit) for message, hint in found_problems)
            count += not found_problems
    return Survey(fmt, count, tuple(problems), "openai" if reading.openai else None)
