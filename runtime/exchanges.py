"""Served exchanges: what `ftc serve --log DIR` appends, one JSON object per line, and what `ftc data from-logs`
reads back.

A log folder holds exchanges-000001.jsonl, exchanges-000002.jsonl, ... (`EXCHANGE_GLOB`): a file is appended to
until it passes its size limit, then the next number starts; a restarted server continues after the highest
number and never rewrites a file. Every record (`Exchange`) is redacted before it is written (the serve side's
redaction), so nothing on disk holds what redaction was configured to remove.

`id` is what feedback refers to: the client's own id when it sent one in the `X-Request-Id` header, otherwise
the id of the server's answer (chatcmpl-..., cmpl-...). The answer carries it back in `X-Request-Id`.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from ftc.runtime.records import RecordModel

EXCHANGE_FORMAT = 1
EXCHANGE_PREFIX = "exchanges-"
EXCHANGE_GLOB = f"{EXCHANGE_PREFIX}[0-9][0-9][0-9][0-9][0-9][0-9].jsonl"
REQUEST_ID_HEADER = "X-Request-Id"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # a log file's size before the next one starts


class Exchange(RecordModel):
    """One request and its answer, as the client saw them."""

    format_version: int = EXCHANGE_FORMAT
    id: str
    time: str  # ISO 8601 UTC, when the request arrived
    endpoint: Literal["chat", "completions"]
    model: str  # the model name the client asked for
    arm: str | None = None  # A/B serving: the label of the arm that answered; None when one model is served
    run: str | None = None  # the served run folder (absolute), None for a plain model folder
    plan_sha256: str | None = None  # the served run's plan hash
    messages: tuple[dict[str, Any], ...] | None = None  # chat: the request's messages, redacted
    prompt: str | None = None  # completions: the prompt, redacted
    answer: str | None = None  # the first choice's text, redacted; None when the request failed
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float
    status: int  # the HTTP status the client got
    error: str | None = None
    stream: bool = False
    redactions: int = 0  # spans redaction replaced in this record


class ExchangeError(Exception):
    """A log line that is not an exchange: the message names the file and the line."""


def log_files(folder: Path) -> list[Path]:
    """The exchange files of a log folder, oldest first."""
    return sorted(folder.glob(EXCHANGE_GLOB)) if folder.is_dir() else []


def read_exchanges(path: Path) -> Iterator[tuple[Path, int, Exchange]]:
    """Every exchange of a log file or folder as (file, line number, record); a malformed line raises
    ExchangeError naming file:line. A last line without its newline is one being written, and is skipped."""
    files = log_files(path) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise ExchangeError(f"{path}: no {EXCHANGE_PREFIX}NNNNNN.jsonl files (what `ftc serve --log {path}` writes)")
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ExchangeError(f"{file}: cannot be read ({exc})") from exc
        lines = text.split("\n")
        for number, line in enumerate(lines[:-1], start=1):  # the part after the last newline is unfinished
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise ExchangeError(f"{file}:{number}: not a JSON object ({exc})") from exc
            try:
                exchange = Exchange.model_validate(data)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "record"
                raise ExchangeError(f"{file}:{number}: {where}: {first['msg']}") from exc
            yield file, number, exchange


class ExchangeLog:
    """Appends exchanges to a log folder from many threads, starting the next file past `max_bytes`."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self.lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        existing = log_files(folder)
        self.number = int(existing[-1].stem.removeprefix(EXCHANGE_PREFIX)) if existing else 1

    @property
    def path(self) -> Path:
        return self.folder / f"{EXCHANGE_PREFIX}{self.number:06d}.jsonl"

    def append(self, exchange: Exchange) -> Path:
        line = (json.dumps(exchange.model_dump(mode="json"), ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self.lock:
            if self.path.exists() and self.path.stat().st_size > 0 and self.path.stat().st_size + len(line) > self.max_bytes:
                self.number += 1
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            return self.path


def request_id_of(header: str | None) -> str | None:
    """A client's X-Request-Id, when it is a usable id (1-128 printable characters without spaces)."""
    if header is None or not re.fullmatch(r"[\x21-\x7e]{1,128}", header):
        return None
    return header
