"""The lock file: canonical JSON that records every resolved value and every input's hash.

Sorted keys, 2-space indent, a trailing newline, a format_version, no timestamps and no absolute
paths. It is always rewritten whole. It holds a `Lock` (compiler/plan/model.py): the Plan plus the hashes of
the files rendered from it; `read_lock` gives that typed value back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pydantic

from ftc.compiler.hashing import sha256_text
from ftc.compiler.plan.model import FORMAT_VERSION, GENERATED, Lock, Plan

LOCK_NAME = "ftc.lock.json"

__all__ = ["FORMAT_VERSION", "GENERATED", "LOCK_NAME", "LockError", "canonical", "is_build_file_name", "plan_hash", "read_lock"]


class LockError(ValueError):
    """A lock file that this ftc cannot read: unreadable, of another format version, or edited out of shape."""


def canonical(obj: Any) -> str:
    """The one serialisation of a lock: byte-identical for equal content."""
    _reject_unstable(obj, "$")
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


PATH_KEYS = {"path", "reference", "source"}  # keys whose values are paths: the lock holds relative ones only


def _is_absolute(value: str) -> bool:
    return value.startswith("/") or (len(value) > 2 and value[1:3] in (":\\", ":/"))


def _reject_unstable(obj: Any, where: str) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"lock key at {where} is not a string: {k!r}")
            _reject_unstable(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _reject_unstable(v, f"{where}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"lock value at {where} is not finite")
    elif isinstance(obj, str) and where.rsplit(".", 1)[-1] in PATH_KEYS and _is_absolute(obj):
        raise ValueError(f"lock value at {where} is an absolute path: {obj!r}")
    elif not isinstance(obj, (dict, list, str, int, float, bool, type(None))):
        raise TypeError(f"lock value at {where} has type {type(obj).__name__}")


def plan_hash(plan: Plan | dict[str, Any]) -> str:
    """The hash that names a plan: everything but the artifacts, which are rendered from it."""
    data = plan.to_json() if isinstance(plan, Plan) else plan
    return sha256_text(canonical({k: v for k, v in data.items() if k != "artifacts"}))


def read_lock(path: Path) -> Lock:
    """The lock at `path`, typed. A lock of another format version asks for a recompile; never a traceback."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LockError(f"{path}: not a readable lock ({exc}); run `ftc compile` on its spec again") from None
    if not isinstance(data, dict):
        raise LockError(f"{path}: not a lock: it holds a JSON {type(data).__name__}, not an object; run `ftc compile` on its spec again")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise LockError(
            f"{path}: lock format_version {version!r}, but this ftc reads format {FORMAT_VERSION}; "
            "run `ftc compile` on its spec again to rewrite the build"
        )
    try:
        lock = Lock.model_validate(data)
    except pydantic.ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise LockError(f"{path}: {where}: {exc.errors()[0]['msg']} (was the lock edited by hand?); run `ftc compile` again") from None
    outside = sorted(name for name in lock.artifacts if not is_build_file_name(name))
    if outside:
        raise LockError(f"{path}: artifacts: {outside[0]!r} is not a file inside the build folder (was the lock edited by hand?); run `ftc compile` again")
    return lock


def is_build_file_name(name: str) -> bool:
    """A name the build folder may hold: relative, below it, no `..` (a lock edited to name ../../spec.toml is refused)."""
    parts = name.split("/")
    return bool(name) and not _is_absolute(name) and "\\" not in name and all(part not in ("", ".", "..") for part in parts)
