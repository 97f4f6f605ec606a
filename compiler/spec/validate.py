"""Source text -> `Spec`, or every diagnostic that stands in the way.

Pass one (here and in `checks`) looks at the spec and its input files only. The machine it will run
on is checked in a second pass, just before running (`ftc.runtime`).
"""

from __future__ import annotations

import math
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types as at
import pydantic

from ftc.compiler.diagnostics import Diagnostic, did_you_mean, one_of, quoted, read_spec_text
from ftc.compiler.methods import METHOD_KINDS, METHODS, UNAVAILABLE
from ftc.compiler.schema import SYSTEM_ENV_VARS
from ftc.compiler.spec import Spec
from ftc.compiler.spec.project import NAME_LIMIT
from ftc.compiler.spec.source import Path as KeyPath
from ftc.compiler.spec.source import SourceMap, Span
from ftc.compiler.spec.syntax import nodes, read_toml

_SECRET_KEY = re.compile(r"(api_?key|token|secret|password|passwd)$", re.IGNORECASE)


@dataclass(frozen=True)
class LoadedSpec:
    """A spec that passed schema validation, with what diagnostics need to point into it."""

    spec: Spec
    path: Path  # the spec file
    display: str  # how diagnostics name the file
    text: str
    source_map: SourceMap

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path written in the spec, resolved against the spec's folder."""
        return (self.base_dir / relative).resolve()

    def diag(
        self,
        key: str,
        message: str,
        hint: str | None = None,
        *,
        severity: str = "error",
        value: bool = True,
        near: tuple[str, ...] = (),
    ) -> Diagnostic:
        """A diagnostic about `key`, placed on `key` if the spec writes it, else on the first of `near` it writes."""
        for alternative in (key, *near):
            if self.source_map.has(_split(alternative)):
                key = alternative
                break
        path = _split(key)
        span = self.source_map.locate(path, value=value)
        if not self.source_map.has(path):  # a default, not written: point at the table, not a value
            span = self.source_map.locate(path[:1], value=False)
        return Diagnostic(severity, self.display, span.line, span.col, key, message, hint, span.length)  # type: ignore[arg-type]


def display_path(path: Path) -> str:
    """The path relative to the working directory when it lies below it, as users typed it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _split(key: str) -> KeyPath:
    return tuple(int(p) if p.isdigit() else p for p in key.split(".")) if key else ()


def _dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path)


# -- the schema at a path ---------------------------------------------------------------------------


def _model_at(path: KeyPath, raw: dict[str, Any]) -> type[pydantic.BaseModel] | None:
    """The pydantic model whose fields live at `path` (a table path), following `method.kind`."""
    model: type[pydantic.BaseModel] = Spec
    for i, part in enumerate(path):
        if not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        if path[: i + 1] == ("method",):
            kind = raw.get("method", {}).get("kind") if isinstance(raw.get("method"), dict) else None
            method = METHODS.get(kind) if isinstance(kind, str) else None
            if method is None:
                return None
            model = method.spec
            continue
        candidates = [a for a in typing.get_args(annotation) or (annotation,) if isinstance(a, type)]
        sub = next((a for a in candidates if issubclass(a, pydantic.BaseModel)), None)
        if sub is None:
            return None
        model = sub
    return model


def _all_table_fields() -> dict[str, str]:
    """field name -> the table it belongs to, for 'belongs in [training]' hints."""
    owners: dict[str, str] = {}
    for table, info in Spec.model_fields.items():
        model = info.annotation
        if table == "method":
            for method in METHODS.values():
                for name in method.spec.model_fields:
                    owners.setdefault(name, "method")
            continue
        if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
            for name in model.model_fields:
                owners.setdefault(name, table)
    return owners


def _unknown_key_hint(path: KeyPath, raw: dict[str, Any]) -> str | None:
    name = str(path[-1])
    parent = path[:-1]
    model = _model_at(parent, raw)
    if _SECRET_KEY.search(name):
        return (
            "never write a secret in the spec; put it in an environment variable and name the variable, "
            'e.g. `api_key_env = "MY_API_KEY"` in [serve] or `token_env = "HF_TOKEN"` in [model]'
        )
    if parent == ("method",) and model is not None:
        owner = next((m for m in METHODS.values() if name in m.spec.model_fields), None)
        if owner is not None:
            return f'"{name}" is {owner.key_words}; set kind = "{owner.kind}" to use it'
    if model is not None:
        hint = did_you_mean(name, model.model_fields)
        if hint:
            return hint
    owner = _all_table_fields().get(name)
    if owner and parent and parent[0] != owner:
        return f'"{name}" belongs in [{owner}]'
    if model is not None:
        return "known keys here: " + ", ".join(f for f in model.model_fields if f != "kind")
    return None


# -- pydantic errors -> diagnostics -----------------------------------------------------------------


def _clean_loc(loc: tuple[Any, ...], raw: dict[str, Any]) -> KeyPath:
    """Drop pydantic's union tags and type labels: ('method', 'lora', 'r') -> ('method', 'r'), ('training',
    'epochs', 'int') -> ('training', 'epochs'). A part the spec itself holds is a key, whatever its name."""
    out: list[str | int] = []
    node: Any = raw
    for i, part in enumerate(loc):
        if isinstance(part, str) and i == 1 and loc[0] == "method" and part in METHOD_KINDS:
            continue
        if (isinstance(node, dict) and part in node) or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
        elif isinstance(part, str) and (_TAG.match(part) or node is not None and not isinstance(node, (dict, list))):
            continue  # a label pydantic adds for a union member or a validator, not a key of the spec
        else:
            node = None  # a key the spec does not write (a missing one)
        out.append(part)
    return tuple(out)


_TAG = re.compile(r"^(int|float|str|bool|list|dict|none|function-\w+|constrained-\w+|\w+\[.*\])$", re.DOTALL)


def _describe(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _convert(err: dict[str, Any], raw: dict[str, Any], loaded: _Source) -> Diagnostic:
    path = _clean_loc(err["loc"], raw)
    kind = err["type"]
    key = _dotted(path)
    msg = err["msg"].removeprefix("Value error, ")
    hint = None
    on_value = True
    value = err.get("input")
    if isinstance(value, float) and not math.isfinite(value) and kind not in ("extra_forbidden", "missing", "string_type"):
        whole = kind.startswith("int") or kind == "literal_error"
        msg = f"must be a {'whole' if whole else 'finite'} number, not {value}"
        hint = _range_hint(path, raw) or "write a number"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = f"expected a table, got {_describe(value)}"
        name = _dotted(path)
        if isinstance(value, list):
            hint = f"write [{name}] with one pair of brackets: [[{name}]] makes an array of tables"
        else:
            hint = f"write the keys under a [{name}] header, e.g. [{name}] then `key = value` lines"
    elif kind == "extra_forbidden":
        msg = "unknown table" if len(path) == 1 else "unknown key"
        hint = _unknown_key_hint(path, raw)
        on_value = False
    elif kind == "missing":
        msg = f'missing required {"table" if len(path) == 1 else "key"}'
        hint = f"add [{key}]" if len(path) == 1 else f"add `{path[-1]} = ...` under [{_dotted(path[:-1])}]"
        if path == ("method", "kind"):
            hint = f"add `kind = ...`, {one_of(METHOD_KINDS)}"
    elif kind == "union_tag_invalid":
        path = path + ("kind",)
        key = _dotted(path)
        tag = err.get("ctx", {}).get("tag")
        msg = f'unknown method kind "{tag}"'
        hint = did_you_mean(str(tag), METHOD_KINDS) or one_of(METHOD_KINDS)
        if str(tag).lower() in UNAVAILABLE:
            reason, nearest = UNAVAILABLE[str(tag).lower()]
            msg = f'ftc has no method kind "{tag}": {reason}'
            hint = "the nearest methods ftc has: " + ", ".join(f'kind = "{k}"' for k in nearest)
    elif kind == "union_tag_not_found":
        path = path + ("kind",)
        key = _dotted(path)
        msg = "missing required key"
        hint = f"add `kind = ...` under [method], {one_of(METHOD_KINDS)}"
    elif kind == "literal_error":
        expected = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
        msg = f"invalid value {quoted(err['input'])}"
        hint = did_you_mean(str(err["input"]), expected) if isinstance(err["input"], str) else None
        hint = f"{hint} ({one_of(expected)})" if hint else one_of(expected)
        if isinstance(err["input"], str) and _NUMBER.match(err["input"]):
            hint = f"write the number without quotes, or {one_of(expected).removeprefix('expected ')}"
    elif kind.endswith(("_type", "_parsing")):
        msg = f"{msg.replace('Input should be', 'expected')}, got {_describe(err['input'])}"
        value = err["input"]
        if isinstance(value, str) and kind in ("int_type", "float_type", "bool_type", "int_parsing", "float_parsing", "bool_parsing"):
            hint = "write the value without quotes"
        elif kind in ("int_type", "int_from_float") and isinstance(value, float):
            hint = f"write a whole number, e.g. {int(value)}"  # finite: non-finite numbers were handled above
        elif kind == "list_type" and isinstance(value, (str, int, float)):
            hint = f"write an array: {path[-1]} = [{_toml(value)}]"
        elif kind == "string_type" and isinstance(value, (list, dict, int, float)):
            hint = f'write a string in quotes, e.g. {path[-1]} = "..."'
        else:
            hint = _range_hint(path, raw) or "see `ftc schema` for the type of each key"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long", "string_too_short", "string_too_long"):
        msg = msg.replace("Input should be", "must be").replace("List should", "must").replace("String should", "must")
        limit = err.get("ctx", {}).get("max_length")
        if kind == "string_too_short" and value == "":
            msg = "must not be empty"
        elif kind == "string_too_long" and isinstance(value, str):
            msg = f"is {len(value)} characters long, over the limit of {limit}"
        hint = _range_hint(path, raw) or (f"shorten it to at most {limit} characters" if kind == "string_too_long" else None)
    elif kind == "string_pattern_mismatch" and path == ("project", "name"):
        rule = f"up to {NAME_LIMIT} lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
        msg = f"invalid name {quoted(value)}"
        if isinstance(value, str) and len(value) > NAME_LIMIT:
            msg = f"name is {len(value)} characters long, over the limit of {NAME_LIMIT}"
        hint = f"use {rule} (it names the folders build/<name>/ and runs/<name>/)"
    elif kind == "value_error" and str(path[-1]).endswith("_env"):
        value = str(err["input"])
        holds = "the API key clients must send" if path[-1] == "api_key_env" else "the secret"
        example = "FTC_API_KEY" if path[-1] == "api_key_env" else "HF_TOKEN"
        if value in SYSTEM_ENV_VARS:
            msg = f"{value} is a system variable, not one that holds a secret"
            hint = f'name a variable you set to {holds}, e.g. {path[-1]} = "{example}"'
        else:
            suggestion = value.upper() if value.upper() != value and _ENV_LIKE.match(value.upper()) else example
            msg = "must name an environment variable in upper case (the variable holds the secret, the spec holds its name)"
            hint = f'e.g. {path[-1]} = "{suggestion}"'
    elif kind == "value_error":
        msg = f"{quoted(value)} {msg}"
        hint = _VALUE_HINTS.get(_dotted(path)) or _value_hint(msg, path, raw)
    else:
        msg = msg.replace("Input should be", "must be").replace("List should", "must")
        hint = _range_hint(path, raw)
    if kind == "missing" and len(path) > 1:
        span = loaded.map.locate(path[:-1], value=False)
    elif kind == "missing":
        span = loaded.map.locate((), value=False)
    else:
        span = _locate(loaded.map, path, on_value)
    return Diagnostic("error", loaded.display, span.line, span.col, key, msg, hint, span.length)


_VALUE_HINTS = {
    "serve.host": (
        'give one address to bind: "127.0.0.1" (this machine only) or "0.0.0.0" (every interface); server options '
        "cannot be passed here (for an API key set serve.api_key_env)"
    ),
}


def _value_hint(msg: str, path: KeyPath, raw: dict[str, Any]) -> str | None:
    rest = _range_hint(path, raw)
    if "control character" in msg:
        return "remove it: line breaks, tabs and terminal escapes do not belong in this value" + (f" ({rest})" if rest else "")
    if msg.endswith("is blank"):
        if isinstance(path[-1], int):
            return "remove the blank entry from the list"
        return "write a value, or remove the key to use its default" + (f" ({rest})" if rest else "")
    if "whitespace" in msg:
        return "remove the spaces around the value"
    return rest


def _locate(smap: SourceMap, path: KeyPath, value: bool) -> Span:
    """Where `path` is written; for a table only dotted keys or a [a.b.c] header create, the first key below it."""
    if not smap.has(path) and path:
        below = [span for written, span in smap.keys.items() if written[: len(path)] == path]
        if below:
            return min(below, key=lambda s: (s.line, s.col))
    return smap.locate(path, value=value)


_ENV_LIKE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*$")


def _toml(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _takes_text(path: KeyPath, raw: dict[str, Any]) -> bool:
    """The key takes a string and no number: a number there is the wrong type, however odd the number."""
    model = _model_at(path[:-1], raw)
    name = path[-1] if path else None
    if model is None or not isinstance(name, str) or name not in model.model_fields:
        return False
    annotation = model.model_fields[name].annotation
    members = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else (annotation,)
    members = tuple(typing.get_args(m)[0] if typing.get_origin(m) is typing.Annotated else m for m in members)
    return str in members and not {int, float} & set(members)


def _range_hint(path: KeyPath, raw: dict[str, Any]) -> str | None:
    """'allowed: at least 0 and below 1', from the field's own constraints, then its description."""
    model = _model_at(path[:-1], raw)
    name = path[-1] if path else None
    if model is None or not isinstance(name, str) or name not in model.model_fields:
        return None
    bounds = []
    field = model.model_fields[name]
    members = [m for m in typing.get_args(field.annotation) if typing.get_origin(m) is typing.Annotated]
    inner = [c for m in members for info in m.__metadata__ for c in getattr(info, "metadata", [])]  # int | "auto"
    for c in [*field.metadata, *inner]:
        if isinstance(c, at.Ge):
            bounds.append(f"at least {c.ge}")
        elif isinstance(c, at.Gt):
            bounds.append(f"greater than {c.gt}")
        elif isinstance(c, at.Le):
            bounds.append(f"at most {c.le}")
        elif isinstance(c, at.Lt):
            bounds.append(f"below {c.lt}")
        elif isinstance(c, at.MinLen) and c.min_length > 1:
            bounds.append(f"at least {c.min_length} long")
        elif isinstance(c, at.MaxLen):
            bounds.append(f"at most {c.max_length} characters")
    desc = model.model_fields[name].description or ""
    allowed = f"allowed: {' and '.join(bounds)}" if bounds else ""
    return "; ".join(x for x in (allowed, desc.split(". ")[0].rstrip(".")) if x) or None


@dataclass(frozen=True)
class _Source:
    display: str
    text: str
    map: SourceMap


def parse(path: Path) -> tuple[LoadedSpec | None, list[Diagnostic]]:
    """Parse and schema-validate the spec at `path`. Returns the spec (when valid) and all diagnostics."""
    display = display_path(path)
    text, unreadable = read_spec_text(path, display)
    if text is None:
        return None, [unreadable] if unreadable else []
    raw, smap, unreadable = read_toml(text, display)
    if raw is None:
        return None, [unreadable] if unreadable else []
    src = _Source(display, text, smap)
    diags = _refused_values(raw, src)
    try:
        spec = Spec.model_validate(raw)
    except pydantic.ValidationError as exc:
        seen = {d.key for d in diags}  # a literal secret or a huge number already explains what is wrong there
        # A union reports once per member; for a string, the member that lists allowed values explains best, and a
        # number that is not finite is best explained as that.
        rank = {"finite_number": 1}
        errs = sorted(exc.errors(include_url=False), key=lambda e: 0 if e["type"] == "literal_error" and isinstance(e["input"], str) else rank.get(e["type"], 2))
        for err in errs:
            if _dotted(_clean_loc(err["loc"], raw)) in seen:
                continue
            diag = _convert(err, raw, src)
            if diag.key not in seen:  # a union reports once per member; one message per key is enough
                seen.add(diag.key)
                diags.append(diag)
        return None, diags
    loaded = LoadedSpec(spec, path, display, text, src.map)
    return (loaded if not diags else None), diags


# -- values refused before the schema sees them ---------------------------------------------------

MAX_INT = 2**63 - 1  # no setting takes a larger integer, and nothing downstream could hold one

_SECRET_VALUES = [
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"), "a Hugging Face token"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b"), "an API key"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), "an AWS access key"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), "a GitHub token"),
    (re.compile(r"\b[0-9a-f]{40}\b"), "a 40-hex-digit key (e.g. a W&B API key)"),
]
_SHA_OK = {("model", "revision")}  # a 40-hex commit sha is expected there
_SECRET_HINT = (
    "secrets never go in the spec (it is committed and hashed into the lock); put the value in an environment "
    'variable and give its name, e.g. token_env = "HF_TOKEN"'
)


def _refused_values(raw: dict[str, Any], src: _Source) -> list[Diagnostic]:
    """Integers beyond 64 bits (Python refuses to print some, so they must not reach a message), and anything
    that looks like a secret written literally."""
    found = []
    for path, node in nodes(raw):
        message, hint = None, None
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_INT:
            digits = math.floor(math.log10(abs(node))) + 1
            if _takes_text(path, raw):
                message, hint = f"expected a string, got an integer of about {digits} digits", f'write a string in quotes, e.g. {path[-1]} = "..."'
            else:
                message = f"integer too large (about {digits} digits)"
                hint = _range_hint(path, raw) or "no setting takes a number this large"
        elif isinstance(node, str):
            secret = (w for pattern, w in _SECRET_VALUES if pattern.search(node) and not (path in _SHA_OK and "40-hex" in w))
            what = next(secret, None)
            message, hint = (f"looks like {what} written literally", _SECRET_HINT) if what else (None, None)
        if message is not None:
            span = src.map.locate(path)
            found.append(Diagnostic("error", src.display, span.line, span.col, _dotted(path), message, hint, span.length))
    return found
