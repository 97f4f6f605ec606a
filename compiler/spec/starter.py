"""`ftc init`: a commented starter spec (templates/starter.toml) with the user's choices filled in.

Values enter the TOML only through `toml_string`, which writes a basic string that reads back as
exactly the same value; nothing a user types can break out of it.

The template words full, LoRA, QLoRA and DPO by hand (WORDED). Every other kind's [method] table is written from
the registry: each key with its default and its description, the registry's learning rate and usual range, and
the data format and packing the method trains with.
"""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import pydantic

from ftc.compiler.build.render import environment
from ftc.compiler.methods import METHODS
from ftc.compiler.spec import METHOD_KINDS, Project

STARTER = "starter.toml"
FALLBACK_NAME = "my-model"
WORDED = ("full", "lora", "qlora", "dpo")  # the kinds templates/starter.toml explains in its own words
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(value: str) -> str:
    """A TOML basic string for `value`: quotes, backslashes and control characters escaped."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{value!r} is not valid text (it holds undecodable bytes)") from None
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    text = '"' + "".join(out) + '"'
    if tomllib.loads(f"v = {text}")["v"] != value:
        raise ValueError(f"{value!r} does not round-trip as a TOML string")
    return text


def toml_value(value: object) -> str:
    """A default of a [method] key as TOML: a bool, number, string or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ValueError(f"no TOML form for {value!r}")


def method_section(kind: str) -> dict[str, object]:
    """What the starter says about a kind from the registry alone: its description, its keys (name, default as TOML
    or None when it has none, description wrapped as comment lines), its learning rate and usual range, and the data
    it trains on."""
    method = METHODS[kind]
    given = method.starter or {}
    table = method.spec.model_validate({"kind": kind, **given})
    keys = []
    for name, field in method.spec.model_fields.items():
        if name == "kind" or name in given:
            continue
        default = field.get_default(call_default_factory=True)
        about = textwrap.wrap((field.description or "").rstrip(".") + ".", 108)
        keys.append((name, None if default is None else toml_value(default), about))
    usual = method.usual_learning_rates(table)
    return {
        "description": method.spec.model_fields["kind"].description,
        "keys": keys,
        "learning_rate": repr(method.learning_rate(table)),
        "usual": f"{usual[0]:g} to {usual[1]:g}" if usual else None,
        "trains_on": method.trains_on,
        "packing": method.packing,
        "tables": [
            (f"method.{name}", [[(k, toml_value(v)) for k, v in entry.items()] for entry in entries])
            for name, entries in given.items()
        ],
    }


def default_name(folder: Path) -> str:
    """A project name from a folder name: lowercase letters, digits, '.', '_' and '-', at most 64."""
    name = re.sub(r"[^a-z0-9._-]+", "-", folder.name.lower())
    name = re.sub(r"-{2,}", "-", name).lstrip("._-")[:64].rstrip("._-")
    return name or FALLBACK_NAME


def check_name(name: str) -> str | None:
    """Why `name` cannot be a project name, or None when it can."""
    try:
        Project(name=name)
    except pydantic.ValidationError:
        return f"project name {name!r} must be 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


def render_starter(name: str, method: str, train: str, validation: str, model: str) -> str:
    """The starter spec's text. Raises ValueError for a name or method the schema would refuse."""
    problem = check_name(name)
    if problem:
        raise ValueError(problem)
    if method not in METHOD_KINDS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHOD_KINDS)}")
    env = environment()
    env.filters["toml"] = toml_string
    section = None if method in WORDED else method_section(method)
    text = env.get_template(STARTER).render(
        name=name, method=method, section=section, train=train, validation=validation, model=model
    )
    tomllib.loads(text)  # proves it parses before anyone writes it
    return text
