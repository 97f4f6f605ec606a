"""Diagnostics: collected first, reported together, each naming file:line:col, the key, and a hint."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


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
    sources = sources or {}
    ordered = sorted(diags, key=lambda d: (d.file, d.line, d.col, d.severity, d.key))
    out: list[str] = []
    for d in ordered:
        out.append(d.headline())
        text = sources.get(d.file)
        if text is not None:
            lines = text.splitlines()
            if 1 <= d.line <= len(lines):
                src = lines[d.line - 1]
                gutter = f"{d.line:>5} | "
                out.append(gutter + src)
                out.append(" " * (len(gutter) - 2) + "| " + " " * (d.col - 1) + "^" * max(d.length, 1))
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
