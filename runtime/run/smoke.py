"""`ftc run SPEC --smoke`: the whole pipeline on a handful of steps, before the real run.

The smoke build (compiler/build/smoke.py) is compiled and written into build/<name>-smoke/, checked against the
files just written, and run like any build into runs/<name>-smoke/<run-id>/; then `ftc eval`'s code scores a few
held-out examples. The real build/<name>/ and runs/<name>/ are never read for writing. The verdict names each
stage, the loss from the first logged step to the last, and the real run's time estimated from the smoke's pace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.build.compile import Build, BuildError, write_build
from ftc.compiler.build.stale import changed_files
from ftc.runtime.run.execute import RunRefused
from ftc.runtime.runfolder import RunFolderError, read_events

EVAL_EXAMPLES = 4


@dataclass
class SmokeResult:
    """What the smoke run found; `failed` names the stage that failed (None when all passed)."""

    run_dir: Path | None = None
    failed: str | None = None
    reason: str = ""
    steps: int = 0
    first_loss: float | None = None
    last_loss: float | None = None
    eval_examples: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    seconds_per_step: float | None = None
    startup_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None


def losses(events: list[dict[str, Any]]) -> list[float]:
    """The training losses the script logged, in order."""
    return [e["loss"] for e in events if e.get("event") == "log" and isinstance(e.get("loss"), (int, float))]


def pace(events: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(seconds from the script's start to its first step, seconds per step after that), from events' times."""
    start = next((e["time"] for e in events if e.get("event") == "start" and "time" in e), None)
    steps = [e for e in events if e.get("event") == "step" and "time" in e]
    if not steps:
        return None, None
    startup = steps[0]["time"] - start if start is not None else None
    if len(steps) < 2:
        return startup, None
    return startup, (steps[-1]["time"] - steps[0]["time"]) / (steps[-1]["step"] - steps[0]["step"] or 1)


def real_estimate(result: SmokeResult, real_steps: int) -> float | None:
    """The real run's seconds at the smoke run's pace: the smoke's fixed cost (`ftc run` from start to end, less
    its steps: starting, loading, saving) and then each real step as fast as the smoke's steps went. A rough
    guide: a larger data set costs more to read, and more evaluations cost more."""
    if result.seconds_per_step is None:
        return None
    fixed = max(0.0, result.seconds.get("train", 0.0) - result.seconds_per_step * result.steps)
    return fixed + result.seconds_per_step * real_steps


def run_smoke(
    compile_smoke: Callable[[], Build | None],
    check_device: Callable[[Build], dict[str, Any]],
    train: Callable[[Build, dict[str, Any]], tuple[Path, Any]],
    evaluate: Callable[[Path, int], Any],
) -> SmokeResult:
    """Run each stage in order and stop at the first that fails. The stages are given as functions so that the
    command line shows its own progress; each raises (or returns None) to fail."""
    result = SmokeResult()

    def timed(stage: str, work: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return work()
        finally:
            result.seconds[stage] = round(time.monotonic() - started, 1)

    try:
        build = timed("compile", compile_smoke)
    except Exception as exc:  # a smoke run reports every failure by its stage, whatever raised it
        result.failed, result.reason = "compile", _why(exc)
        return result
    if build is None:
        result.failed, result.reason = "compile", "the spec did not compile (the diagnostics are above)"
        return result
    try:
        timed("write", lambda: write_build(build))
    except BuildError as exc:
        result.failed, result.reason = "write", "; ".join(exc.problems)
        return result
    if problems := changed_files(build.directory, build.lock.artifacts):
        result.failed, result.reason = "write", "; ".join(problems)
        return result
    try:
        device = timed("device", lambda: check_device(build))
    except Exception as exc:  # RunRefused: this machine cannot run the plan
        result.failed, result.reason = "device", _why(exc)
        return result
    try:
        run_dir, record = timed("train", lambda: train(build, device))
    except Exception as exc:
        result.failed, result.reason = "train", _why(exc)
        return result
    result.run_dir = run_dir
    events = read_events(run_dir)
    found = losses(events)
    result.steps = record.step or 0
    result.first_loss, result.last_loss = (found[0], found[-1]) if found else (None, None)
    result.startup_seconds, result.seconds_per_step = pace(events)
    if record.status != "completed":
        result.failed, result.reason = "train", f"the run ended {record.status} (exit {record.exit_code}); see its train.log"
        return result
    if not found:
        result.failed, result.reason = "train", "the script logged no training loss"
        return result
    try:
        evaluation = timed("eval", lambda: evaluate(run_dir, EVAL_EXAMPLES))
    except Exception as exc:
        result.failed, result.reason = "eval", _why(exc)
        return result
    result.eval_examples = evaluation.record.examples or 0
    if not result.eval_examples:
        result.failed, result.reason = "eval", "no held-out example was evaluated"
    return result


def _why(exc: Exception) -> str:
    """The message of what a stage raised: ftc's own refusals as they are, anything else with its type."""
    if isinstance(exc, (RunFolderError, RunRefused)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
