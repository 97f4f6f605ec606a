"""The examples each split trains on, streamed: read, cleaned, converted and split off as the build trains on them.

`ftc compile` and `ftc data check` both read the data through here, one record at a time, so a 1 GB file is
measured in bounded memory and both describe the same examples: after the spec's cleaning (dedup, empty
turns, Unicode, whitespace) and `convert_to` (OpenAI's records are read as ftc's first, data/openai.py), with a `validation_split` taken by the seed exactly as the
generated script takes it. What stays in memory is small per record: 16-byte digests for dedup, and one
cleaning-report entry per removed or changed example.

A file rewritten by cleaning or conversion becomes the build's data/<key>.jsonl. It is never held whole:
`StreamedFile` knows its sha256 and writes itself by reading the source again.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from ftc.compiler.atomic import replace_atomic
from ftc.compiler.data.clean import Cleaning, clean_stream, jsonl_line, to_chat
from ftc.compiler.data.openai import first_is_dpo, read_records
from ftc.compiler.data.read import Record, record_format
from ftc.compiler.data.records import record_problems
from ftc.compiler.plan.inputs import relative_to_root
from ftc.compiler.spec.checks import extra_fields
from ftc.compiler.spec.validate import LoadedSpec, display_path
from ftc.templates import prepare


@dataclass(frozen=True)
class StreamedFile:
    """A build file too large to hold: its sha256, and how to write it (again) from the sources."""

    sha256: str
    write: Callable[[IO[bytes]], None] = field(compare=False, repr=False)

    def text(self) -> str:
        """The whole content; for tests and small files."""
        buffer = io.BytesIO()
        self.write(buffer)
        return buffer.getvalue().decode("utf-8")

    def write_to(self, path: Path) -> None:
        """Write the file whole or not at all (ftc.compiler.atomic)."""
        replace_atomic(path, self.write)


class DataSource:
    """The data files a spec names, each read as training will see it."""

    def __init__(self, loaded: LoadedSpec, root: Path, limit: dict[str, int] | None = None) -> None:
        self.loaded = loaded
        self.root = root
        self.limit = limit or {}  # a smoke build: file key -> the first N examples only
        self.data = loaded.spec.data
        self.cleaning = Cleaning.of(self.data)
        self.keys = [key for key in ("train", "validation") if getattr(self.data, key) is not None]

    @property
    def rewritten(self) -> bool:
        """Whether the build trains on its own copy of the data (cleaned or converted) rather than the sources."""
        return self.cleaning.active or self.data.convert_to is not None or self.openai or bool(self.limit)

    @cached_property
    def openai(self) -> bool:
        """Whether the files hold OpenAI's records, read as ftc's: format = "openai", or with "auto" a train file
        whose first record is OpenAI DPO data (as the survey detects it)."""
        if self.data.format != "auto":
            return self.data.format == "openai"
        return first_is_dpo(self.path("train"))

    def path(self, key: str) -> Path:
        return self.loaded.resolve(getattr(self.data, key))

    def display(self, key: str) -> str:
        return display_path(self.path(key))

    def file(self, key: str) -> str:
        """The file as the lock and the cleaning report name it: relative to the project root."""
        return relative_to_root(self.path(key), self.root)

    def records(self, key: str, report: list[dict[str, Any]] | None = None) -> Iterator[Record]:
        """The file's examples as training sees them: well-formed records (the others are reported as problems by
        the checks, and never reach training), cleaned, deduplicated, converted. Removed and changed examples are
        appended to `report` when it is given."""
        path = self.path(key)
        records: Iterator[Record] = (r for r in read_records(path, display_path(path), self.openai) if isinstance(r, Record))
        if self.cleaning.active:
            records = clean_stream(records, self.cleaning, self.file(key), report if report is not None else [])
        records = _well_formed(records, extra_fields(self.loaded.spec))
        if self.data.convert_to == "chat":
            records = (replace(r, value=to_chat(r.value, self.data.system_prompt)) for r in records)
        if key in self.limit:
            records = itertools.islice(records, self.limit[key])
        return records

    def split_keys(self) -> dict[str, str]:
        """split -> the spec key of the file its examples come from."""
        if self.data.validation_split is not None:
            return {"train": "train", "validation": "train"}
        return {key: key for key in self.keys}

    def splits(self) -> Iterator[tuple[str, str, Callable[[], Iterator[Record]]]]:
        """(split, spec key of its file, a fresh stream of its records) for train and then validation. A
        validation_split counts the cleaned train records first, then holds out the seeded share that the
        generated script holds out."""
        if self.data.validation_split is None:
            yield "train", "train", lambda: self.records("train")
            if self.data.validation is not None:
                yield "validation", "validation", lambda: self.records("validation")
            return
        count = sum(1 for _ in self.records("train"))
        held = set(prepare.held_out_indices(count, self.data.validation_split, self.loaded.spec.project.seed))
        yield "train", "train", lambda: (r for i, r in enumerate(self.records("train")) if i not in held)
        yield "validation", "train", lambda: (r for i, r in enumerate(self.records("train")) if i in held)

    def rewritten_file(self, key: str, report: list[dict[str, Any]]) -> StreamedFile:
        """The build's copy of one data file; the pass that hashes it also fills the cleaning report."""
        digest = hashlib.sha256()
        for record in self.records(key, report):
            digest.update(jsonl_line(record.value).encode())

        def write(fh: IO[bytes]) -> None:
            for record in self.records(key):
                fh.write(jsonl_line(record.value).encode())

        return StreamedFile(digest.hexdigest(), write)


def _well_formed(records: Iterator[Record], allowed: tuple[str, ...]) -> Iterator[Record]:
    """The well-formed records of the file's format, which its first record sets, each judged as the survey judges
    it (read.record_format): a record of another format, or with a problem, is reported there and never trains."""
    fmt = None
    for record in records:
        found = record_format(record.value, fmt, allowed)
        fmt = fmt or found
        if found is not None and found == fmt and not record_problems(record.value, found, allowed):
            yield record
