"""What every verb shares: the two consoles, UsageError, spec paths, diagnostics and progress on screen."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from ftc.compiler.diagnostics import Diagnostic, read_source, render

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class UsageError(Exception):
    """Bad invocation: a missing file or a wrong argument. Exit code 2."""


def spec_path(value: str) -> Path:
    path = Path(value)
    if path.is_dir():
        raise UsageError(f"{value} is a folder; give the spec file (.toml)")
    if path.exists() and not path.is_file():
        raise UsageError(f"{value} is not a regular file (a pipe, socket or device); give the spec file (.toml)")
    if not path.is_file():
        raise UsageError(f"spec not found: {value}")
    return path


def run_folder(value: str, names: Sequence[str]) -> Path:
    """A folder that `ftc run` made, holding every file in `names`."""
    run_dir = Path(value)
    for name in names:
        if not (run_dir / name).is_file():
            raise UsageError(
                f"{value} is not a run folder (it has no {name}); give one that `ftc run` made, "
                "such as runs/<name>/<run-id>"
            )
    return run_dir


def display(path: Path) -> str:
    from ftc.compiler.spec.validate import display_path

    return display_path(path)


def report(diags: Sequence[Diagnostic], sources: dict[str, str]) -> None:
    if diags:
        err.print(render(diags, sources), markup=False)


def progress():
    """A rich progress bar factory for long steps (tokenizing); quiet when stderr is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )

    def tick(label: str, total: int):
        task = bar.add_task(label, total=total)
        return lambda: bar.advance(task)

    return bar, tick


def compile_or_report(spec: str, root: Path | None = None, smoke_steps: int | None = None):
    """Compile a spec in memory (its smoke build with `smoke_steps`); on problems, print every diagnostic and
    return None."""
    from ftc.compiler.build.compile import compile_build
    from ftc.compiler.diagnostics import SpecError

    path = spec_path(spec)
    bar, tick = progress()
    try:
        with bar:
            build = compile_build(path, root=root, progress=tick, smoke_steps=smoke_steps)
    except SpecError as exc:
        report(exc.diagnostics, {display(path): read_source(path)})
        return None
    report(build.warnings, {display(path): read_source(path)})
    return build


def print_sections(text: str) -> None:
    """Plain text from describe_plan/diff_locks, with unindented section titles in bold on a terminal."""
    from rich.text import Text

    for line in text.splitlines():
        out.print(Text(line, style="bold" if line and not line.startswith(" ") else ""))


def step_reporter(status, quiet: bool = False):
    """What a long runtime step calls with each label: the spinner's text on a terminal, else a line each."""
    if err.is_terminal:
        return status.update
    if quiet:
        return lambda label: None
    return lambda label: err.print(f"  {label}", markup=False)


def quiet_model_loading() -> None:
    """Before a verb loads a model: the libraries' bars and the notices known to be harmless would scroll through
    ftc's own progress. Each is silenced by name (templates/load_model.py: quiet_known_notices, shared with the
    generated scripts); any other warning still shows."""
    import transformers

    from ftc.templates.load_model import quiet_known_notices

    quiet_known_notices()
    transformers.logging.disable_progress_bar()  # its own switch for the bars it draws while loading weights
