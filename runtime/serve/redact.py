"""Redaction of served exchanges before they are written: the built-in patterns [serve] log_redact names (emails,
API keys, long numbers; compiler/spec/serve.py holds them) and the spec's own log_patterns, each match replaced
by its marker ([EMAIL], [KEY], [NUMBER], [REDACTED]) and counted."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ftc.compiler.spec.serve import PATTERN_MARKER, REDACTIONS

DEFAULT_REDACT = ("email", "key")
KEPT_KEYS = ("role",)  # message keys whose values are never rewritten


class Redactor:
    """Replaces every match of its patterns, in order, and counts the replacements."""

    def __init__(self, builtin: Sequence[str] = DEFAULT_REDACT, patterns: Sequence[str] = ()) -> None:
        unknown = sorted(set(builtin) - set(REDACTIONS))
        if unknown:
            raise ValueError(f"unknown redaction(s): {', '.join(unknown)} (known: {', '.join(REDACTIONS)})")
        self.rules = [(re.compile(REDACTIONS[name][0]), REDACTIONS[name][1]) for name in builtin]
        self.rules += [(re.compile(pattern), PATTERN_MARKER) for pattern in patterns]  # the spec checked them

    def text(self, value: str) -> tuple[str, int]:
        total = 0
        for pattern, marker in self.rules:
            value, count = pattern.subn(marker, value)
            total += count
        return value, total

    def value(self, value: Any) -> tuple[Any, int]:
        """Every string inside a JSON value (dict keys and `role` values excepted), redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            done = [self.value(v) for v in value]
            return [v for v, _ in done], sum(n for _, n in done)
        if isinstance(value, dict):
            out, total = {}, 0
            for key, item in value.items():
                if key in KEPT_KEYS:
                    out[key] = item
                    continue
                out[key], count = self.value(item)
                total += count
            return out, total
        return value, 0
