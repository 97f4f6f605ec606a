"""The compile stage: spec -> plan -> build/<name>/ (lock, generated script, chat template).

`compile_build` returns the build in memory; `write_build` puts it on disk (stale.py says whether the one
on disk is current). Nothing here loads weights.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.atomic import write_atomic
from ftc.compiler.build.lock import LOCK_NAME, LockError, canonical, plan_hash, read_lock
from ftc.compiler.build.render import render_script, render_text, template_hashes
from ftc.compiler.build.smoke import smoke_limit, smoke_plan, smoke_spec
from ftc.compiler.data.clean import REPORT_NAME as CLEANING_REPORT
from ftc.compiler.data.clean import jsonl
from ftc.compiler.data.read import position, unit_of
from ftc.compiler.data.splits import DataSource, StreamedFile
from ftc.compiler.data.tokens import SplitStats, measure
from ftc.compiler.diagnostics import Diagnostic, SpecError, errors
from ftc.compiler.hashing import FileHasher, sha256_text
from ftc.compiler.methods import METHODS
from ftc.compiler.plan.fit import fit_diagnostics
from ftc.compiler.plan.inputs import InputError, relative_to_root, resolve_model
from ftc.compiler.plan.model import Lock, ModelInput, Plan
from ftc.compiler.plan.modelinfo import TokenizerInfo, inspect_model, load_tokenizer, tokenizer_info
from ftc.compiler.plan.resolve import Measured, installed_versions, resolve, resolve_strategy
from ftc.compiler.plan.rewards import resolve_rewards
from ftc.compiler.spec.checks import validate
from ftc.compiler.spec.export import check_export_plan
from ftc.compiler.spec.validate import LoadedSpec, display_path

SCRIPT_NAME = "train.py"
CHAT_TEMPLATE_NAME = "chat_template.jinja"
EXECUTABLE = (".sh", ".sbatch")
SHOWN = 10  # examples listed per problem before "... and N more"

Tick = Callable[[str, int], Callable[[], None]]  # (label, total) -> advance-by-one


def launch_templates(devices: int, strategy: str, nodes: int) -> dict[str, str]:
    """The launch files a plan needs (output name -> template): none on one device."""
    if devices == 1:
        return {}
    files = {"launch.sh": "launch.sh.j2", "accelerate.yaml": "accelerate.yaml.j2"}
    if strategy.startswith("deepspeed"):
        files["deepspeed.json"] = "deepspeed.json.j2"
    if nodes > 1:
        files["slurm.sbatch"] = "slurm.sbatch.j2"
    return files


@dataclass(frozen=True)
class Build:
    name: str
    directory: Path
    files: dict[str, str | StreamedFile]  # file name -> content, every file the build owns
    lock: Lock
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def plan_hash(self) -> str:
        return plan_hash(self.lock)


def build_dir(name: str, root: Path) -> Path:
    return root / "build" / name


def compile_build(
    spec_path: Path,
    root: Path | None = None,
    progress: Tick | None = None,
    use_cache: bool = True,
    packages: dict[str, str | None] | None = None,
    smoke_steps: int | None = None,
) -> Build:
    """Compile a spec into an in-memory build. Raises SpecError with every diagnostic when it cannot.

    `packages` replaces the installed versions in the lock; golden tests use it to stay version-independent.
    `smoke_steps` compiles the smoke build instead (compiler/build/smoke.py).
    """
    root = (root or Path.cwd()).resolve()
    loaded, diags, summary = validate(spec_path)
    if loaded is None or summary is None or errors(diags):
        raise SpecError(diags)
    warnings = [d for d in diags if not d.is_error]
    smoke = smoke_plan(loaded, smoke_steps) if smoke_steps is not None else None
    if smoke is not None:
        loaded = smoke_spec(loaded, smoke)
    spec = loaded.spec
    with FileHasher(use_cache) as hasher:
        try:
            source = resolve_model(spec.model.base, spec.model.revision, loaded.base_dir, root, hasher, _is_hub(loaded))
        except InputError as exc:
            raise SpecError([*warnings, loaded.diag(exc.key, exc.message, exc.hint)]) from None
        reference = None
        reference_name = getattr(spec.method, "reference", "base")  # a method that trains against another model
        if reference_name != "base":
            try:
                reference = resolve_model(reference_name, None, loaded.base_dir, root, hasher, False)
            except InputError as exc:
                raise SpecError([*warnings, loaded.diag("method.reference", exc.message, exc.hint)]) from None
        try:
            rewards = resolve_rewards(loaded, root, hasher)
        except InputError as exc:
            raise SpecError([*warnings, loaded.diag(exc.key, exc.message, exc.hint)]) from None
        data_files = {
            split: {
                "path": relative_to_root(loaded.resolve(rel), root),
                "sha256": hasher.sha256(loaded.resolve(rel)),
                "bytes": loaded.resolve(rel).stat().st_size,
            }
            for split, rel in (("train", spec.data.train), ("validation", spec.data.validation))
            if rel is not None
        }

    tokenizer = load_tokenizer(source)
    tok = tokenizer_info(tokenizer)
    chat_template, template_source = chat_template_for(loaded, tok, root)
    fmt = "chat" if spec.data.convert_to == "chat" else summary.format or "chat"
    if chat_template is None and fmt in ("chat", "preference", "unpaired"):
        raise SpecError([*warnings, loaded.diag("model.chat_template", "the model's tokenizer has no chat template", "give one: chat_template = \"path/to/template.jinja\"")])

    data = DataSource(loaded, root, smoke_limit(smoke, keys=["train", "validation"]) if smoke else None)
    splits, problems = _measure_splits(loaded, data, fmt, tokenizer, chat_template, progress)
    warnings += [d for d in problems if not d.is_error]
    if errors(problems):
        raise SpecError([*warnings, *errors(problems)])
    info = inspect_model(source)
    method_def = METHODS[spec.method.kind]
    if method_def.model_check is not None:
        problem = method_def.model_check(spec.method, info)
        if problem is not None:
            raise SpecError([*warnings, loaded.diag(*problem)])

    cleaned: dict[str, str | StreamedFile] = {}
    report: list[dict[str, Any]] = []
    if data.rewritten:
        cleaned = {f"data/{key}.jsonl": data.rewritten_file(key, report) for key in data.keys}
    cleaning = None
    if data.cleaning.active:
        cleaning = {
            **data.cleaning.as_dict(),
            "removed": sum(e["action"] == "removed" for e in report),
            "changed": sum(e["action"] == "changed" for e in report),
            "report": CLEANING_REPORT,
        }
    report += overlong_entries(loaded, data, splits)
    if report:
        cleaned[CLEANING_REPORT] = jsonl(sorted(report, key=lambda e: (e["file"], e["line"])))
    devices, strategy = resolve_strategy(spec.hardware)
    launch = launch_templates(devices, strategy, spec.hardware.nodes)
    measured = Measured(
        spec_path=relative_to_root(spec_path, root),
        spec_sha256=sha256_text(loaded.text),
        data_files=data_files,
        data_format=fmt,
        format_detected=spec.data.format == "auto",
        validation_source="file" if spec.data.validation else ("split" if spec.data.validation_split else "none"),
        splits=splits,
        model=source,
        reference_model=reference,
        rewards=rewards,
        model_info=info,
        tokenizer=tok,
        chat_template_source=template_source,
        chat_template_sha256=sha256_text(chat_template or ""),
        packages=packages if packages is not None else installed_versions(),
        templates=template_hashes([*method_def.templates, *sorted(launch.values())]),
        converted_from=summary.converted_from or (summary.format if spec.data.convert_to else None),
        cleaning=cleaning,
    )
    plan = resolve(spec, measured)
    if smoke is not None:
        plan = Plan.model_validate({**plan.to_json(), "smoke": smoke.model_dump()})
    fit = fit_diagnostics(loaded, plan, info)
    if method_def.plan_check is not None:
        fit += list(method_def.plan_check(loaded, plan))
    fit += check_export_plan(loaded, plan)
    warnings += [d for d in fit if not d.is_error]
    if errors(fit):
        raise SpecError([*warnings, *errors(fit)])
    directory = build_dir(spec.project.name, root)
    context = {
        "plan": plan,
        "plan_hash": plan_hash(plan),
        "paths": script_paths(plan, directory, root, data={key: f"data/{key}.jsonl" for key in data.keys} if data.rewritten else None),
        "template": method_def.template,
    }
    script = render_script(method_def.template, context, SCRIPT_NAME)
    files = {SCRIPT_NAME: script, CHAT_TEMPLATE_NAME: chat_template or "", **cleaned}
    for name, template in launch.items():
        files[name] = render_text(template, context)
    lock = Lock.of(plan, {name: content.sha256 if isinstance(content, StreamedFile) else sha256_text(content) for name, content in files.items()})
    files[LOCK_NAME] = canonical(lock.to_json())
    return Build(spec.project.name, directory, files, lock, warnings)


def chat_template_for(loaded: LoadedSpec, tok: TokenizerInfo, root: Path) -> tuple[str | None, str]:
    """The chat template the spec asks for (a file, or the model's own), and where it came from."""
    if loaded.spec.model.chat_template != "auto":
        template_path = loaded.resolve(loaded.spec.model.chat_template)
        return template_path.read_text(encoding="utf-8"), relative_to_root(template_path, root)
    return tok.chat_template, "model"


def _is_hub(loaded: LoadedSpec) -> bool:
    from ftc.compiler.spec.checks import is_hub_id

    return is_hub_id(loaded.spec.model.base, loaded)


def script_paths(plan: Plan, script_dir: Path, root: Path, data: dict[str, str] | None = None, runs: str | None = None) -> dict[str, str]:
    """Paths as the script sees them: relative to its own folder, so that it works from any cwd.

    `data` and `runs` replace the data files and the runs folder (eject copies the data next to the script).
    """

    def rel(root_relative: str) -> str:
        return Path(os.path.relpath(root / root_relative, script_dir)).as_posix()

    def model_path(entry: ModelInput) -> str:
        return rel(entry.reference) if entry.local_reference else entry.reference

    data = data or {}
    paths = {f"data_{split}": data.get(split) or rel(entry.path) for split, entry in plan.inputs.data.items()}
    paths["model"] = model_path(plan.inputs.model)
    if plan.inputs.reference_model is not None:
        paths["reference"] = model_path(plan.inputs.reference_model)
    if plan.inputs.reward_models:
        paths["reward_models"] = {name: model_path(entry) for name, entry in plan.inputs.reward_models.items()}
    paths["chat_template"] = CHAT_TEMPLATE_NAME
    paths["runs"] = runs or rel(f"runs/{plan.project.name}")
    return paths


def _measure_splits(loaded: LoadedSpec, data: DataSource, fmt: str, tokenizer, chat_template, progress: Tick | None) -> tuple[dict[str, SplitStats], list[Diagnostic]]:
    d = loaded.spec.data
    stats: dict[str, SplitStats] = {}
    problems: list[Diagnostic] = []
    for split, key, records in data.splits():
        tick = progress(f"tokenizing {split}", None) if progress else None
        s = measure(split, records(), tokenizer, chat_template, fmt, max_length=d.max_length, overlong=d.overlong, train_on_all=d.train_on == "all", tick=tick)
        stats[split] = s
        problems += _split_problems(loaded, key, data.display(key), s)
    return stats, problems


def overlong_entries(loaded: LoadedSpec, data: DataSource, splits: dict[str, SplitStats]) -> list[dict[str, Any]]:
    """Cleaning-report entries for the examples the overlong policy drops or truncates when the script runs."""
    d = loaded.spec.data
    entries = []
    for split, key in data.split_keys().items():
        s = splits[split]
        entries += [
            {"file": data.file(key), "line": line, "action": "removed", "reason": f"{n} tokens, more than max_length = {d.max_length} (overlong = \"drop\")"}
            for line, n in s.dropped
        ]
        entries += [
            {"file": data.file(key), "line": line, "action": "changed", "reason": f"truncated from {n} to max_length = {d.max_length} tokens (overlong = \"truncate\")"}
            for line, n in s.truncated
        ]
    return entries


def _listing(display: str, items: list[tuple[int, Any]], fmt: Callable[[Any], str]) -> str:
    shown = "; ".join(f"{display}:{position(line, unit_of(display))} ({fmt(v)})" for line, v in items[:SHOWN])
    more = f"; ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return shown + more


def _split_problems(loaded: LoadedSpec, key: str, display: str, s: SplitStats) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    max_length = loaded.spec.data.max_length
    if s.overlong:
        out.append(loaded.diag(
            "data.max_length",
            f"{len(s.overlong)} {s.name} example(s) are longer than max_length = {max_length}: {_listing(display, s.overlong, lambda n: f'{n} tokens')}",
            f"raise max_length (longest is {max(n for _, n in s.overlong)}), or set data.overlong = \"drop\" or \"truncate\"",
        ))
    if s.failed:
        out.append(loaded.diag(f"data.{key}", f"{len(s.failed)} example(s) cannot be tokenized: {_listing(display, s.failed, str)}", "fix or remove these records"))
    if s.no_loss:
        out.append(loaded.diag(
            f"data.{key}",
            f"{len(s.no_loss)} example(s) have no token that carries loss: {_listing(display, [(line, '') for line in s.no_loss], lambda _: 'no assistant tokens')}",
            "each example needs an assistant turn (or a completion) inside max_length",
        ))
    if s.dropped or s.truncated:
        what = "dropped" if s.dropped else "truncated"
        items = s.dropped or s.truncated
        out.append(loaded.diag(
            "data.overlong",
            f"{len(items)} {s.name} example(s) longer than {max_length} tokens will be {what}: {_listing(display, items, lambda n: f'{n} tokens')}",
            "the lock lists every line; raise max_length to keep them whole",
            severity="warning",
        ))
    if s.examples == 0 and not out:
        out.append(loaded.diag(f"data.{key}", f"no {s.name} example is left to train on", "add examples"))
    return out


class BuildError(Exception):
    """The build folder cannot be written safely; `problems` says why, each with what to do. Exit code 1."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def unsafe_build_paths(directory: Path, writes: Iterable[str] = ()) -> list[str]:
    """Why build/<name>/ is no plain folder of plain files that ftc may trust and write, in words; empty when it is.

    build/ or build/<name>/ being a link (compile would write, and run would execute, outside the project), a file
    in the place of either, and inside the folder a link, a FIFO or device, or a folder where a file of `writes`
    (the names compile writes) goes."""
    problems = []
    for path in (directory.parent, directory):
        if path.is_symlink():
            problems.append(f"{display_path(path)} is a symbolic link to {os.readlink(path)}; ftc writes and runs builds only in a real folder "
                            f"inside the project: remove the link (`rm {display_path(path)}`) and compile again")
        elif path.exists() and not path.is_dir():
            problems.append(f"{display_path(path)} is a file, not a folder; move it out of the way and compile again")
    if problems or not directory.is_dir():
        return problems
    for folder, dirs, files in os.walk(directory):
        for name in sorted(dirs + files):
            path = Path(folder, name)
            shown = display_path(path)
            if path.is_symlink():
                problems.append(f"{shown} is a symbolic link to {os.readlink(path)}; a build holds only the files ftc wrote: delete the link and compile again")
            elif not path.is_dir() and not path.is_file():
                problems.append(f"{shown} is not a regular file (a FIFO, socket or device); a build holds only the files ftc wrote: delete it")
    for name in sorted(writes):
        if (directory / name).is_dir() and not (directory / name).is_symlink():
            problems.append(f"{display_path(directory / name)} is a folder where ftc writes a file; delete it and compile again")
    return problems


def _other_spec(build: Build, previous: Lock | None) -> str | None:
    """A spec that still claims this build folder: the one the lock on disk names, when it is another file that
    exists and names the same project. Two such specs would overwrite each other's build without a word."""
    if previous is None or previous.inputs.spec.path == build.lock.inputs.spec.path:
        return None
    other = build.directory.parents[1] / previous.inputs.spec.path
    try:
        name = tomllib.loads(other.read_text(encoding="utf-8")).get("project", {}).get("name")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return None  # gone or renamed: this spec takes the folder over
    if name != build.name:
        return None
    shown = display_path(build.directory)
    return (f"{shown}/ belongs to {previous.inputs.spec.path}, which also sets project.name = {name!r}, and this spec is "
            f"{build.lock.inputs.spec.path}: they would overwrite each other's build; give one of them another "
            f"project.name, or delete {shown}/ to hand it to this spec")


def write_build(build: Build) -> list[Path]:
    """Write every file of the build atomically, and remove files an earlier build of this name owned.

    The old lock goes first and the new lock is written last: a compile killed half way leaves a folder without a
    lock, which `ftc run` and `ftc compile --check` refuse, never a lock beside files it does not describe. Refuses
    (BuildError) a folder that is a link, holds one, or belongs to another spec."""
    problems = unsafe_build_paths(build.directory, build.files)
    if problems:
        raise BuildError(problems)
    old_lock = build.directory / LOCK_NAME
    previous = None
    if old_lock.is_file():
        try:
            previous = read_lock(old_lock)
        except LockError:
            previous = None
    claimed = _other_spec(build, previous)
    if claimed:
        raise BuildError([claimed])
    try:
        return _write_files(build, set(previous.artifacts) if previous else set())
    except OSError as exc:
        where = display_path(Path(exc.filename)) if exc.filename else display_path(build.directory)
        raise BuildError([f"cannot write {where}: {exc.strerror or exc}; check that the folder is writable and the disk has room, then compile again"]) from None


def _write_files(build: Build, previous: set[str]) -> list[Path]:
    build.directory.mkdir(parents=True, exist_ok=True)
    (build.directory / LOCK_NAME).unlink(missing_ok=True)
    written = []
    for name, content in sorted(build.files.items(), key=lambda item: (item[0] == LOCK_NAME, item[0])):
        path = build.directory / name
        if isinstance(content, StreamedFile):
            content.write_to(path)
        else:
            write_atomic(path, content, mode=0o755 if name.endswith(EXECUTABLE) else None)
        written.append(path)
    for name in sorted(previous - set(build.files)):
        (build.directory / name).unlink(missing_ok=True)  # read_lock admits only names inside the folder
    return sorted(written)
