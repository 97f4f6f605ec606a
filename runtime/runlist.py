"""`ftc runs` and `ftc diff RUN_A RUN_B`: what each run trained on, how it went, and what changed between two.

A run's lineage comes from run.json (parent, data_sha256, written when it started: runtime/lineage.py); a run
written by an older ftc has neither, and they are read from its copy of the lock instead. A smoke run
(`ftc run --smoke`) lives under runs/<name>-smoke/ and is listed with the project it checks, marked as smoke.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.build.smoke import SMOKE_SUFFIX
from ftc.compiler.plan.diff import diff_locks
from ftc.runtime.lineage import data_versions, parent_of
from ftc.runtime.runfolder import (
    RUNS,
    Parent,
    RunFolderError,
    RunRecord,
    read_evaluation,
    read_record,
    run_folders,
    run_lock,
)


@dataclass(frozen=True)
class RunRow:
    """One run as `ftc runs` lists it (and --json prints it)."""

    project: str
    run_id: str
    path: str
    status: str | None
    smoke: bool
    plan_sha256: str | None
    data_sha256: dict[str, str]
    step: int | None
    max_steps: int | None
    train_loss: float | None
    eval_loss: float | None
    metrics: dict[str, float | None] = field(default_factory=dict)  # eval.json: each metric's tuned value
    headline: str | None = None  # the lock's evaluation.headline (default: its first metric but mean_length)
    parent: dict[str, Any] | None = None  # run.json's parent (as JSON)
    promoted: bool | None = None  # room for promotion (runtime/promote.py): None while nothing says

    @property
    def parent_label(self) -> str:
        """The parent run's id (and project when it is another), else the base model as the lock names it."""
        if not self.parent:
            return "-"
        run = self.parent.get("run")
        if run:
            other = run.get("project")
            return f"{other}/{run.get('run_id')}" if other and other != self.project else str(run.get("run_id"))
        return str(self.parent.get("base"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lineage_of(run_dir: Path, record: RunRecord) -> tuple[Parent | None, dict[str, str]]:
    """(parent, data versions) from run.json, or from the run's lock copy for a run that predates them."""
    if record.parent is not None and record.data_sha256 is not None:
        return record.parent, record.data_sha256
    try:
        lock = run_lock(run_dir)
    except RunFolderError:
        return record.parent, record.data_sha256 or {}
    return record.parent or parent_of(lock, record.project_root(run_dir)), record.data_sha256 or data_versions(lock)


def row_of(run_dir: Path, shown: str) -> RunRow:
    """The row of one run folder; `shown` is how the path is printed. Raises RunFolderError for no run."""
    record = read_record(run_dir)
    parent, data = lineage_of(run_dir, record)
    try:
        evaluation = read_evaluation(run_dir)
    except RunFolderError:
        evaluation = None
    metrics = {name: row.get("tuned") for name, row in evaluation.metrics.items()} if evaluation else {}
    try:
        headline = run_lock(run_dir).evaluation.headline_metric()
    except RunFolderError:
        headline = next((name for name in metrics if name != "mean_length"), None)
    project = record.project or run_dir.parent.name
    return RunRow(
        project=project, run_id=record.run_id or run_dir.name, path=shown, status=record.status,
        smoke=bool(record.smoke) or project.endswith(SMOKE_SUFFIX) and _smoke_lock(run_dir),
        plan_sha256=record.plan_sha256, data_sha256=dict(data), step=record.step, max_steps=record.max_steps,
        train_loss=record.train_loss, eval_loss=record.eval_loss, metrics=metrics, headline=headline,
        parent=parent.to_json() if parent else None, promoted=_promoted(run_dir),
    )


def _promoted(run_dir: Path) -> bool | None:
    """Whether runs/<name>/promoted.json (`ftc promote`) names this run as current; None when nothing says."""
    from ftc.runtime.promote import read_promoted

    try:
        record = read_promoted(run_dir.parent)
    except RunFolderError:
        return None
    return None if record is None else record.current == run_dir.name


def _smoke_lock(run_dir: Path) -> bool:
    try:
        return run_lock(run_dir).smoke is not None
    except RunFolderError:
        return False


def project_runs(root: Path, name: str | None) -> list[Path]:
    """The run folders of project `name` and of its smoke runs, oldest first within each; of every project under
    <root>/runs/ when `name` is None."""
    if name is None:
        folder = root / RUNS
        names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    else:
        names = [name, f"{name}{SMOKE_SUFFIX}"]
    return [run for n in names for run in run_folders(root, n)]


def run_changes(a: Path, b: Path) -> dict[str, list[str]]:
    """What changed from run `a` to run `b`, by section (empty sections left out): lineage (parent and data),
    plan (the lock copies' diff), outcome (status, steps, losses) and metrics (eval.json, base and tuned)."""
    rows = row_of(a, str(a)), row_of(b, str(b))
    sections: dict[str, list[str]] = {"lineage": [], "plan": [], "outcome": [], "metrics": []}
    left, right = rows
    parent_changed = (left.parent_label, _parent(left)) != (right.parent_label, _parent(right))
    if parent_changed:
        sections["lineage"].append(f"parent: {_parent(left)} -> {_parent(right)}")
    for split in sorted(set(left.data_sha256) | set(right.data_sha256)):
        before, after = left.data_sha256.get(split), right.data_sha256.get(split)
        if before != after:
            sections["lineage"].append(f"{split} data: sha256 {_short(before)} -> {_short(after)}")
    try:
        sections["plan"] = diff_locks(run_lock(a), run_lock(b))
    except RunFolderError as exc:
        sections["plan"] = [f"cannot compare the plans: {exc}"]
    for label, key in (("status", "status"), ("steps", "step"), ("train loss", "train_loss"), ("eval loss", "eval_loss")):
        before, after = getattr(left, key), getattr(right, key)
        if before != after:
            sections["outcome"].append(f"{label}: {_num(before)} -> {_num(after)}")
    sections["metrics"] = _metric_changes(a, b)
    if any(sections.values()) and not parent_changed:  # the parent of each side, always named
        sections["lineage"].insert(0, f"parent (both): {_parent(left)}")
    return {name: lines for name, lines in sections.items() if lines}


def _metric_changes(a: Path, b: Path) -> list[str]:
    sides = []
    for run in (a, b):
        try:
            evaluation = read_evaluation(run)
        except RunFolderError:
            evaluation = None
        sides.append(evaluation.metrics if evaluation else None)
    if sides[0] is None and sides[1] is None:
        return []
    if None in sides:
        return [f"eval.json: {'absent' if sides[0] is None else 'present'} -> {'absent' if sides[1] is None else 'present'}"]
    lines = []
    for name in sorted(set(sides[0]) | set(sides[1])):
        before, after = sides[0].get(name, {}), sides[1].get(name, {})
        for side in ("base", "tuned"):
            if before.get(side) != after.get(side):
                lines.append(f"{name} ({side}): {_num(before.get(side))} -> {_num(after.get(side))}")
    return lines


def _parent(row: RunRow) -> str:
    sha = (row.parent or {}).get("sha256")
    return f"{row.parent_label} ({_short(sha)})" if sha else row.parent_label


def _short(sha: str | None) -> str:
    return f"{sha[:8]}.." if sha else "none"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
