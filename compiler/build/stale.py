"""Is the build on disk current? Decided from hashes, without compiling.

The lock records the sha256 of every input (spec, data, model files, chat template, templates), the
package versions and ftc's version, and the sha256 of every file the build wrote. `check_hashes` hashes
the inputs again (through the cached FileHasher, so an unchanged 1 GB file costs a stat) and the build
folder, and compares: nothing is tokenized and no tokenizer is loaded. Only when an input differs does
the caller compile again in memory, so that `stale_inputs` can name every consequence the way a full
compile sees it. Problems in the build folder itself (an artifact edited by hand or missing, a file the
lock does not list, such as a planted `argparse.py` the script would import) need no compile to be named.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler import __version__
from ftc.compiler.atomic import is_leftover
from ftc.compiler.build.compile import Build, build_dir
from ftc.compiler.build.lock import (
    LOCK_NAME,
    LockError,
    canonical,
    plan_hash,
    read_lock,
)
from ftc.compiler.build.render import templates_dir
from ftc.compiler.hashing import FileHasher, sha256_text
from ftc.compiler.plan.inputs import (
    InputError,
    ModelSource,
    relative_to_root,
    resolve_model,
)
from ftc.compiler.methods.rewards import reward_names
from ftc.compiler.plan.model import Lock
from ftc.compiler.plan.rewards import reward_model_source
from ftc.compiler.plan.resolve import installed_versions
from ftc.compiler.spec.checks import is_hub_id
from ftc.compiler.spec.validate import LoadedSpec, display_path, parse

INPUT_KINDS = (
    ("inputs.spec", "spec"),
    ("inputs.data", "data"),
    ("inputs.model", "model"),
    ("inputs.reference_model", "reference model"),
    ("inputs.reward_models", "reward model"),
    ("inputs.reward_files", "reward file"),
    ("inputs.chat_template", "chat template"),
    ("inputs.templates", "template"),
    ("packages", "package"),
    ("ftc_version", "ftc version"),
)
CACHED_ARTIFACTS = "data/"  # cleaned data copies can be large: hashed through the cache; generated code never is
SHOWN_FILES = 5  # changed model files named in a reason before "and N more"


@dataclass(frozen=True)
class Staleness:
    """The build on disk compared with its inputs' hashes. Each list holds reasons in words."""

    directory: Path | None  # build/<name>/; None when the spec does not validate (so its name is unknown)
    lock: Lock | None  # the lock on disk, when it could be read
    inputs: list[str] = field(default_factory=list)  # inputs whose hashes differ from the lock's
    folder: list[str] = field(default_factory=list)  # the build folder against the lock: missing or edited artifacts, unlisted files
    drift: list[str] = field(default_factory=list)  # pinned packages whose installed version differs

    def reasons(self, allow_package_drift: bool = False) -> list[str]:
        """Why the build is stale; empty when it is current. With allow_package_drift, package drift is not a reason."""
        drift = [] if allow_package_drift else [f"package changed: {d}" for d in self.drift]
        return [*self.inputs, *drift, *self.folder]

    def build(self) -> Build:
        """The build on disk, as a value the runtime executes: its lock (files are not read)."""
        if self.directory is None or self.lock is None:
            raise ValueError("there is no readable build on disk")
        return Build(self.lock.project.name, self.directory, {}, self.lock)

    @property
    def plan_hash(self) -> str:
        return plan_hash(self.lock) if self.lock is not None else ""


def check_hashes(spec_path: Path, root: Path | None = None, packages: dict[str, str | None] | None = None) -> Staleness:
    """Compare the inputs' hashes and the build folder with the lock on disk. Tokenizes nothing.

    `packages` replaces the installed versions (as in compile_build; the golden tests lock fixed ones).
    """
    root = (root or Path.cwd()).resolve()
    loaded, _ = parse(spec_path)
    if loaded is None:  # a compile will show the diagnostics
        return Staleness(None, None, [f"spec changed: {display_path(spec_path)} (it does not validate now)"])
    directory = build_dir(loaded.spec.project.name, root)
    lock_path = directory / LOCK_NAME
    if not lock_path.is_file():
        return Staleness(directory, None, folder=[f"no build on disk: {display_path(lock_path)} is missing"])
    try:
        lock = read_lock(lock_path)
    except LockError as exc:
        return Staleness(directory, None, folder=[_unreadable(lock_path, exc)])
    recorded = lock.to_json()
    folder = [_not_canonical(lock_path)] if not _is_canonical(lock_path) else []
    inputs = [] if lock.ftc_version == __version__ else [f"ftc version changed: {lock.ftc_version} in the lock, {__version__} here"]
    inputs += changed_inputs(loaded, recorded, root)
    drift = package_drift(lock.packages, installed_versions() if packages is None else packages)
    return Staleness(directory, lock, inputs, folder + changed_files(directory, lock.artifacts), drift)


def changed_inputs(loaded: LoadedSpec, lock: dict[str, Any], root: Path) -> list[str]:
    """The inputs the spec names whose hashes differ from the lock's (as JSON), found the way compile_build finds them."""
    locked = lock.get("inputs", {})
    spec_rel = relative_to_root(loaded.path, root)
    if locked.get("spec") != {"path": spec_rel, "sha256": sha256_text(loaded.text)}:
        return [f"spec changed: {spec_rel}"]  # what else changes follows from the spec: the caller compiles
    spec = loaded.spec
    reasons = []
    with FileHasher() as hasher:
        data = locked.get("data", {})
        wanted = {split: rel for split, rel in (("train", spec.data.train), ("validation", spec.data.validation)) if rel is not None}
        for split in sorted(set(wanted) | set(data)):
            path = loaded.resolve(wanted[split]) if split in wanted else None
            shown = relative_to_root(path, root) if path else data[split].get("path", split)
            if path is None or split not in data or not path.is_file():
                reasons.append(f"data changed: {shown}" + ("" if path is None or path.is_file() else " is missing"))
            elif data[split] != {"path": shown, "sha256": hasher.sha256(path), "bytes": path.stat().st_size}:
                reasons.append(f"data changed: {shown}")
        is_hub = is_hub_id(spec.model.base, loaded)
        reasons += _model_changes("model", locked.get("model"), lambda: resolve_model(spec.model.base, spec.model.revision, loaded.base_dir, root, hasher, is_hub, known_type=False))
        reference = getattr(spec.method, "reference", "base")  # a method that trains against another model
        if reference != "base":
            reasons += _model_changes("reference model", locked.get("reference_model"), lambda: resolve_model(reference, None, loaded.base_dir, root, hasher, False, known_type=False))
        elif "reference_model" in locked:
            reasons.append("reference model changed: the spec names none now")
        reasons += _reward_changes(loaded, locked, root, hasher)
    if spec.model.chat_template != "auto":  # "auto" is the model's own, which the model's files cover
        path = loaded.resolve(spec.model.chat_template)
        shown = relative_to_root(path, root)
        try:
            now = {"source": shown, "sha256": sha256_text(path.read_text(encoding="utf-8"))}
        except (OSError, UnicodeDecodeError):
            now = None
        if locked.get("chat_template") != now:
            reasons.append(f"chat template changed: {shown}" + (" is unreadable" if now is None else ""))
    elif locked.get("chat_template", {}).get("source") != "model":
        reasons.append("chat template changed: the spec asks for the model's own now")
    for name, sha in sorted(locked.get("templates", {}).items()):
        try:
            now = sha256_text((templates_dir() / name).read_text(encoding="utf-8"))
        except OSError:
            now = None
        if now != sha:
            reasons.append(f"template changed: {name}" + (" is gone" if now is None else ""))
    return reasons


def _reward_changes(loaded: LoadedSpec, locked: dict[str, Any], root: Path, hasher: FileHasher) -> list[str]:
    """GRPO's and RLOO's reward models and JSON Schema files against the lock's hashes (the spec is unchanged, so
    the rewards and their names are the ones the lock was compiled from)."""
    rewards = getattr(loaded.spec.method, "rewards", None) or []
    models, files = locked.get("reward_models") or {}, locked.get("reward_files") or {}
    reasons = []
    for reward, name in zip(rewards, reward_names(rewards), strict=True):
        if reward.kind == "reward_model":
            reasons += _model_changes("reward model", models.get(name), lambda path=reward.path: reward_model_source(loaded, path, root, hasher, "", known_type=False))
        elif reward.kind == "json_schema":
            schema = loaded.resolve(reward.schema_file)
            shown = relative_to_root(schema, root)
            try:
                now = hasher.sha256(schema)
            except OSError:
                now = None
            if files.get(shown) != now:
                reasons.append(f"reward file changed: {shown}" + (" is unreadable" if now is None else ""))
    return reasons


def _model_changes(label: str, locked: dict[str, Any] | None, resolve: Callable[[], ModelSource]) -> list[str]:
    try:
        entry = resolve().lock_entry()
    except InputError as exc:
        return [f"{label} changed: {exc.message}"]
    if entry == locked:
        return []
    if not isinstance(locked, dict) or entry.get("reference") != locked.get("reference"):
        return [f"{label} changed: {entry['reference']}"]
    files = changed_model_files(locked.get("files"), entry["files"])
    others = [key for key in sorted(set(entry) | set(locked)) if key != "files" and entry.get(key) != locked.get(key)]
    return [f"{label} changed: {entry['reference']}: " + ", ".join(files + others)]


def changed_model_files(before: Any, after: Any) -> list[str]:
    """A model's files (name -> sha256) that differ, each with what happened to it; the first few, then a count."""
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    changed = [
        f"{name} ({'added' if name not in before else 'removed' if name not in after else 'edited'})"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]
    more = len(changed) - SHOWN_FILES
    return changed[:SHOWN_FILES] + [f"and {more} more file{'s' if more != 1 else ''}"] if more > 0 else changed


def _is_canonical(lock_path: Path) -> bool:
    """Whether the lock is byte for byte what ftc writes for its content (sorted keys, 2-space indent, newline)."""
    try:
        text = lock_path.read_text(encoding="utf-8")
        return text == canonical(json.loads(text))
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return False


def _not_canonical(lock_path: Path) -> str:
    return (
        f"{display_path(lock_path)} was edited by hand or reformatted (it is not the canonical JSON ftc "
        "writes); run `ftc compile` to rewrite it, and never edit the lock"
    )


def changed_files(directory: Path, artifacts: dict[str, str]) -> list[str]:
    """Artifacts the lock lists (name -> sha256) that are missing or differ from their hash, and files it does not list."""
    reasons = []
    with FileHasher(use_cache=False) as exact, FileHasher() as cached:
        for name, sha in sorted(artifacts.items()):
            path = directory / name
            if not path.is_file():
                reasons.append(f"{display_path(path)} is missing")
            elif (cached if name.startswith(CACHED_ARTIFACTS) else exact).sha256(path) != sha:
                reasons.append(f"{display_path(path)} was edited by hand")
    return reasons + unlisted_files(directory, set(artifacts))


def unlisted_files(directory: Path, listed: set[str]) -> list[str]:
    """Every file in the build folder that the lock does not list: ftc did not write it, and the script could import it."""
    found = sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if (path.is_symlink() or not path.is_dir()) and path.relative_to(directory).as_posix() not in listed | {LOCK_NAME}
    )
    return [
        f"{display_path(directory / name)} was left by an ftc compile that was stopped while writing; run `ftc compile` again (it removes it)"
        if is_leftover(name.rsplit("/", 1)[-1])
        else f"{display_path(directory / name)} is not in the lock: ftc did not write it, and the script could import it; delete it"
        for name in found
    ]


def _unreadable(path: Path, exc: Exception) -> str:
    return f"{display_path(path)} is unreadable: {str(exc).removeprefix(f'{path}: ')}"


def stale_reasons(found: Staleness, recompile: Callable[[], Build | None], allow_package_drift: bool = False) -> list[str]:
    """Why the build is stale, empty when it is current. Compiles again (`recompile`) only when an input differs,
    to name every consequence; when that compile fails (it reported its diagnostics), the hashes' reasons stand."""
    if not found.inputs:
        return found.reasons(allow_package_drift)
    fresh = recompile()
    return stale_inputs(fresh, allow_package_drift) if fresh is not None else found.reasons(allow_package_drift)


# -- from a fresh compile ---------------------------------------------------------------------------


def package_drift(pins: dict[str, str | None], installed: dict[str, str | None]) -> list[str]:
    """Each pinned package whose installed version differs, in words."""
    return [
        f"{name} {pins.get(name) or 'absent'} in the lock, {installed.get(name) or 'not installed'} here"
        for name in sorted(set(pins) | set(installed))
        if pins.get(name) != installed.get(name)
    ]


def stale_inputs(fresh: Build, allow_package_drift: bool = False) -> list[str]:
    """Why the build on disk differs from a fresh compile; empty when it is current. With allow_package_drift,
    installed package versions that differ from the lock's pins are not counted (the caller warns about them)."""
    lock_path = fresh.directory / LOCK_NAME
    if not lock_path.is_file():
        return [f"no build on disk: {display_path(lock_path)} is missing"]
    try:
        old = read_lock(lock_path).to_json()
    except LockError as exc:
        return [_unreadable(lock_path, exc)]
    now = fresh.lock.to_json()
    reasons = []
    for dotted, label in INPUT_KINDS:
        if allow_package_drift and dotted == "packages":
            continue
        before, after = _get(old, dotted), _get(now, dotted)
        if before != after:
            reasons.append(f"{label} changed: {', '.join(_changed_keys(dotted, before, after)) or dotted}")
    with FileHasher(use_cache=False) as hasher:
        for name, content in sorted(fresh.files.items()):
            path = fresh.directory / name
            if name == LOCK_NAME:
                continue
            if not path.is_file():
                reasons.append(f"{display_path(path)} is missing")
                continue
            on_disk = hasher.sha256(path)
            if on_disk != now["artifacts"][name] and on_disk != old["artifacts"].get(name):
                reasons.append(f"{display_path(path)} was edited by hand")
    reasons += unlisted_files(fresh.directory, set(fresh.files) | set(old["artifacts"]))
    resolved_differs = lock_path.read_text(encoding="utf-8") != fresh.files[LOCK_NAME]
    if resolved_differs and allow_package_drift:
        resolved_differs = {**old, "packages": None, "artifacts": None} != {**now, "packages": None, "artifacts": None}
    if not reasons and resolved_differs:
        if not _is_canonical(lock_path):
            reasons.append(_not_canonical(lock_path))
        else:
            reasons.append("the resolved plan changed (ftc resolves these inputs differently now)")
    return reasons


def _get(obj: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None  # type: ignore[assignment]
    return obj


def _changed_keys(prefix: str, before: Any, after: Any) -> list[str]:
    """The changed entries under `prefix`: data by path, model files by name, anything else by key."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [prefix]
    out = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key):
            continue
        if key == "files":  # a model's files: name the ones that changed, and how
            out += changed_model_files(before.get(key), after.get(key))
            continue
        value = after.get(key) if isinstance(after.get(key), dict) else None
        out.append((value.get("path") if value else None) or key)
    return out
