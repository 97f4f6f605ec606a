"""Render generated files from templates/ under StrictUndefined, with the plan as the only context.

Spec values enter code only through the `py` filter, which writes a Python literal (repr) and checks
that it reads back as the same value. A literal too long for one line is written as a dict or list with one
item per line, as a person would wrap it. Every rendered script is compile()d before it is written.

The support files shared by every script (templates/prepare.py, templates/run_support.py) are ordinary
modules that ftc imports too. A script takes each in through `{{ support("prepare.py") }}`, which copies the
file from its `# ---- ftc ...` banner line on, verbatim and not rendered: the module docstring and imports
above the banner stay out, and the script's one import block at its top imports the same names
(tests/templates/test_script_layout.py checks both).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import jinja2

from ftc.compiler.hashing import sha256_text
from ftc.compiler.plan.base import PlanModel

_LITERAL_TYPES = (str, int, float, bool, type(None))
LINE = 100  # the longest line a wrapped literal writes, indent included
WIDTH = 88  # the longest literal written on one line: room for `NAME = ` before it
SUPPORT_BANNER = "# ---- ftc "  # where the included part of a support file starts


def py_literal(value: Any, width: int = WIDTH) -> str:
    """A Python literal for `value`, wrapped when longer than `width`; refuses anything that is not plain data.
    A section of the plan enters as the JSON the lock holds for it."""
    if isinstance(value, PlanModel):
        value = value.model_dump(mode="json", by_alias=True)
    _check_plain(value)
    text = _wrapped(value, 0, width)
    if ast.literal_eval(text) != value:
        raise ValueError(f"value does not round-trip as a literal: {value!r}")
    return text


def _wrapped(value: Any, indent: int, width: int) -> str:
    """repr(value), or a dict, list or tuple that does not fit `width` with one item per line (each wrapped in turn)."""
    text = repr(value)
    if len(text) <= width or not isinstance(value, (dict, list, tuple)) or not value:
        return text
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            key = f"{pad}{k!r}: "
            items.append(f"{key}{_wrapped(v, indent + 4, LINE - len(key) - 1)},")
    else:
        items = [f"{pad}{_wrapped(v, indent + 4, LINE - len(pad) - 1)}," for v in value]
    opening, closing = "{}" if isinstance(value, dict) else "[]" if isinstance(value, list) else "()"
    return "\n".join([opening, *items, " " * indent + closing])


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


def support(name: str) -> str:
    """templates/<name> from its `# ---- ftc ...` banner to the end, as a script includes it. Its imports sit above
    the banner, so none lands in the middle of a script; an import below it at the top level is refused."""
    source = (templates_dir() / name).read_text(encoding="utf-8")
    start = source.find("\n" + SUPPORT_BANNER)
    if start < 0:
        raise ValueError(f"templates/{name} has no line starting with {SUPPORT_BANNER!r} to include it from")
    part = source[start + 1 :]
    for node in ast.parse(part).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            where = f"line {node.lineno} of the included part"
            raise ValueError(f"templates/{name} imports below its banner ({where}): move the import above it")
    return part


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
    env.globals["support"] = support
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
