"""Diagnostics: collected first, reported together, each naming file:line:col, the key, and a hint."""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]

# What a diagnostic may echo: a 50 MB value must not become 100 MB of output.
MAX_ECHO = 80  # characters of a value quoted in a message (`shorten`)
_MAX_TEXT = 1000  # a message or hint, whole
_MAX_KEY = 200
_MAX_DETAIL = 4000
_EXCERPT = 120  # columns of a source line shown under the headline
# Control characters would move the cursor or recolour the terminal; each shows as one "?" so columns still line up.
_CONTROL = {c: "?" for c in [*range(9), *range(10, 32), 127]}


def shorten(text: str, limit: int = MAX_ECHO) -> str:
    """`text` cut to `limit` characters, saying how much was left off."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def quoted(value: object) -> str:
    """A value as a message shows it: repr'd, and cut when long."""
    if isinstance(value, str) and len(value) > MAX_ECHO:
        return f"{value[:MAX_ECHO]!r}... ({len(value) - MAX_ECHO} more characters)"
    return repr(value)


def printable(text: str) -> str:
    return text.translate(_CONTROL)


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    file: str
    line: int
    col: int
    key: str  # dotted key path, e.g. "method.lora_alpha"; "" for the file as a whole
    message: str
    hint: str | None = None
    length: int = 1  # columns to underline
    detail: str | None = None  # what lies behind the message (e.g. an estimate's parts), shown under the source line

    def __post_init__(self) -> None:
        """Bound what any diagnostic can print, whoever built it, and keep terminal controls out of it."""
        set_ = object.__setattr__
        set_(self, "key", printable(shorten(self.key, _MAX_KEY)))
        set_(self, "message", printable(shorten(self.message, _MAX_TEXT)))
        if self.hint is not None:
            set_(self, "hint", printable(shorten(self.hint, _MAX_TEXT)))
        if self.detail is not None:
            set_(self, "detail", printable(shorten(self.detail, _MAX_DETAIL)))

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def headline(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        key = f"{self.key}: " if self.key else ""
        label = "" if self.is_error else "warning: "
        return f"{where}: {key}{label}{self.message}"


class SpecError(Exception):
    """Raised by a stage that cannot go on; carries every diagnostic collected so far."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.headline() for d in self.diagnostics))


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a near-miss, or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else None


def one_of(choices: Iterable[str]) -> str:
    return "expected one of: " + ", ".join(f'"{c}"' for c in choices)


def errors(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diags if d.is_error]


def render(diags: Sequence[Diagnostic], sources: dict[str, str] | None = None) -> str:
    """Render diagnostics, each with the offending source line and a caret under the bad text."""
    split = {name: text.splitlines() for name, text in (sources or {}).items()}
    ordered = sorted(diags, key=lambda d: (d.file, d.line, d.col, d.severity, d.key))
    out: list[str] = []
    for d in ordered:
        out.append(d.headline())
        lines = split.get(d.file)
        if lines is not None and 1 <= d.line <= len(lines):
            src, col, length = excerpt(lines[d.line - 1], d.col, d.length)
            gutter = f"{d.line:>5} | "
            out.append(gutter + src)
            out.append(" " * (len(gutter) - 2) + "| " + " " * (col - 1) + "^" * length)
        if d.detail:
            out.append(f"      = note: {d.detail}")
        if d.hint:
            out.append(f"      = hint: {d.hint}")
    n_err = len(errors(diags))
    n_warn = len(diags) - n_err
    if diags:
        parts = []
        if n_err:
            parts.append(f"{n_err} error{'s' if n_err != 1 else ''}")
        if n_warn:
            parts.append(f"{n_warn} warning{'s' if n_warn != 1 else ''}")
        out.append(", ".join(parts))
    return "\n".join(out)


def excerpt(line: str, col: int, length: int, width: int = _EXCERPT) -> tuple[str, int, int]:
    """A source line cut to about `width` columns around `col` (1-based), with the caret's new column and length."""
    line = printable(line)
    length = max(length, 1)
    if len(line) <= width:
        return line, col, length
    start = max(0, min(col - 1 - width // 4, len(line) - width))
    end = start + width
    shown = ("..." if start else "") + line[start:end]
    if end < len(line):
        shown += f"... ({len(line) - end} more characters)"
    visible = max(1, min(length, end - (col - 1)))
    return shown, col - start + (3 if start else 0), visible


# -- the spec's bytes as text ---------------------------------------------------------------------

MAX_SPEC_BYTES = 1_048_576  # a spec is a few KB of settings; 1 MiB leaves room for long prompts and comments


def read_source(path: Path) -> str:
    """The spec's text as diagnostics show it: never raises; bytes that are not UTF-8 show as U+FFFD."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_SPEC_BYTES).decode("utf-8", errors="replace").removeprefix("\ufeff")
    except OSError:
        return ""


def read_spec_text(path: Path, display: str) -> tuple[str | None, Diagnostic | None]:
    """The spec's text, or the one diagnostic that says why it cannot be read as UTF-8 TOML."""

    def problem(message: str, hint: str, line: int = 1, col: int = 1) -> tuple[None, Diagnostic]:
        return None, Diagnostic("error", display, line, col, "", message, hint)

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        return problem(f"cannot read the spec: {exc.strerror or exc}", "check that the file exists and that you may read it")
    if len(data) > MAX_SPEC_BYTES:
        return problem(
            f"the spec is larger than {MAX_SPEC_BYTES // 1024} KiB; a spec holds settings, not data",
            "put examples in the data files the spec names ([data] train), and keep the spec to its settings",
        )
    convert = f"convert it: iconv -f {{}} -t UTF-8 {shlex.quote(display)} > fixed.toml"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(data) > 1 and data.count(b"\x00") * 3 >= len(data)):
        return problem("the spec is UTF-16 (or UTF-32) text; TOML files must be UTF-8", "save it as UTF-8 in your editor, or " + convert.format("UTF-16"))
    if b"\x00" in data:
        return problem("the spec is a binary file, not TOML text", "give the .toml spec file; `ftc init` writes a starter spec")
    if data.startswith(b"\xef\xbb\xbf"):
        return problem(
            "the spec starts with a byte order mark (BOM), which TOML does not allow",
            f"save it as \"UTF-8\" rather than \"UTF-8 with BOM\" in your editor, or remove it: sed -i '1s/^\\xEF\\xBB\\xBF//' {shlex.quote(display)}",
        )
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[data.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8", errors="replace")) + 1
        return problem(
            f"the spec is not UTF-8: byte 0x{data[exc.start]:02X} cannot be decoded",
            "TOML files must be UTF-8; save it as UTF-8 in your editor, or if it is Latin-1 or Windows-1252 text, " + convert.format("CP1252"),
            line,
            col,
        )
