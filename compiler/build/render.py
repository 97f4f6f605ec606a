"""Render generated files from templates/ under StrictUndefined, with the plan as the only context.

Spec values enter code only through the `py` filter, which writes a Python literal (repr) and checks
that it reads back as the same value. Every rendered script is compile()d before it is written.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import jinja2

from ftc.compiler.hashing import sha256_text

_LITERAL_TYPES = (str, int, float, bool, type(None))


def py_literal(value: Any) -> str:
    """A Python literal for `value`; refuses anything that is not plain data."""
    _check_plain(value)
    text = repr(value)
    if ast.literal_eval(text) != value:
        raise ValueError(f"value does not round-trip as a literal: {value!r}")
    return text


def text_literal(value: Any) -> str:
    """Text for a comment or a docstring: one line, quotes and backslashes escaped, so it cannot end either."""
    return json.dumps(str(value), ensure_ascii=True)[1:-1]


def _check_plain(value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k)
            _check_plain(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v)
    elif not isinstance(value, _LITERAL_TYPES):
        raise TypeError(f"only plain data can enter a script, not {type(value).__name__}")


def templates_dir() -> Path:
    import ftc.templates

    return Path(ftc.templates.__file__).parent


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["py"] = py_literal
    env.filters["text"] = text_literal
    return env


def template_hashes(names: list[str]) -> dict[str, str]:
    """sha256 of each template source used by a build (and of what it includes)."""
    root = templates_dir()
    return {name: sha256_text((root / name).read_text(encoding="utf-8")) for name in sorted(names)}


def render_script(template: str, context: dict[str, Any], filename: str = "train.py") -> str:
    """Render a Python script and prove it parses before anyone writes it to disk."""
    text = environment().get_template(template).render(**context)
    compile(text, filename, "exec")
    return text


def render_text(template: str, context: dict[str, Any]) -> str:
    return environment().get_template(template).render(**context)
