"""The spec's text -> the plain tables tomllib reads, or the one diagnostic that says why it cannot be read:
a syntax error placed where it is, and what tomllib cannot even report (nesting that overflows it, a number
too long for Python to convert), placed on the line with the most of it."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from typing import Any

from ftc.compiler.diagnostics import Diagnostic
from ftc.compiler.spec.source import Path as KeyPath
from ftc.compiler.spec.source import SourceMap, map_source

MAX_NESTING = 16  # arrays and tables inside each other; a spec needs 3 or 4
_SYNTAX_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
_NESTING_HINT = "a spec holds tables of plain values: remove the extra brackets"


def read_toml(text: str, display: str) -> tuple[dict[str, Any] | None, SourceMap | None, Diagnostic | None]:
    """The tables and where each key is written, or the diagnostic that stands in the way."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, None, _syntax_error(exc, display, text)
    except RecursionError:
        return None, None, _unparsable(text, display, "nested", _NESTING_HINT)
    except ValueError:  # an integer of thousands of digits
        return None, None, _unparsable(text, display, "number", "no setting takes a number this long; write the value you mean")
    if not raw:
        hint = "run `ftc init` to write a starter spec, or add [project], [model], [data] and [method]"
        return None, None, Diagnostic("error", display, 1, 1, "", "the spec is empty: it sets nothing", hint)
    if any(len(p) > MAX_NESTING for p, _ in nodes(raw)):
        return None, None, _unparsable(text, display, "nested", _NESTING_HINT)
    try:
        return raw, map_source(text), None
    except RecursionError:  # not expected within MAX_NESTING; a diagnostic at 1:1 beats a traceback
        return raw, SourceMap(lines=text.splitlines()), None


def nodes(raw: Any) -> Iterator[tuple[KeyPath, Any]]:
    """Every value of the spec with its path, tables and arrays included; iterative, so no depth overflows it."""
    stack: list[tuple[KeyPath, Any]] = [((), raw)]
    while stack:
        path, node = stack.pop()
        yield path, node
        if isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((path + (i,), v) for i, v in enumerate(node))


_SYNTAX_HINTS = (
    ("twice", "each table and key may appear once; merge the two"),
    ("Cannot overwrite", "each key may appear once in a table; remove one of the two"),
    ("Unclosed", "close the string with the same quote it opened with"),
    ("Invalid value", 'strings need quotes ("..."), arrays brackets ([...]), booleans are true/false'),
    ("Expected '=' after a key", 'write `key = value`; keys with spaces need quotes'),
    ("Invalid statement", "each line holds a [table] header or `key = value`"),
    ("Unclosed array", "close the array with ]"),
)


def _syntax_error(exc: tomllib.TOMLDecodeError, display: str, text: str) -> Diagnostic:
    m = _SYNTAX_POS.search(str(exc))
    line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
    message = _SYNTAX_POS.sub("", str(exc)).strip()
    if "(at end of document)" in message:  # something left open runs to the end: point at the last line written
        lines = text.rstrip().splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        message = message.replace("(at end of document)", "(the file ended first)").strip()
    message = re.sub(r"\(((?:'[^']*',? ?)+)\)", lambda g: "[" + ".".join(re.findall(r"'([^']*)'", g.group(1))) + "]", message)
    hint = next((h for needle, h in _SYNTAX_HINTS if needle in message), "see https://toml.io for the syntax")
    if "(the file ended first)" in message:
        hint = "something is left open: close the array with ], the inline table with }, or the string with its quotes"
    return Diagnostic("error", display, line, col, "", f"invalid TOML: {message}", hint)


def _unparsable(text: str, display: str, what: str, hint: str) -> Diagnostic:
    """For what tomllib cannot even report (nesting too deep, a number too long): the line with the most of it."""
    lines = text.splitlines() or [""]
    score = (lambda s: s.count("[") + s.count("{")) if what == "nested" else (lambda s: max(map(len, re.findall(r"\d+", s)), default=0))
    number = max(range(len(lines)), key=lambda i: score(lines[i]))
    message = f"invalid TOML: nested more than {MAX_NESTING} levels deep" if what == "nested" else "invalid TOML: a number too long to read"
    return Diagnostic("error", display, number + 1, 1, "", message, hint, len(lines[number]))
