"""`ftc init`: a commented starter spec (templates/starter.toml) with the user's choices filled in.

Values enter the TOML only through `toml_string`, which writes a basic string that reads back as
exactly the same value; nothing a user types can break out of it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pydantic

from ftc.compiler.build.render import environment
from ftc.compiler.spec import METHOD_KINDS, Project

STARTER = "starter.toml"
FALLBACK_NAME = "my-model"
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
    text = env.get_template(STARTER).render(name=name, method=method, train=train, validation=validation, model=model)
    tomllib.loads(text)  # proves it parses before anyone writes it
    return text
