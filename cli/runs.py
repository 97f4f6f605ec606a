"""`ftc runs`: the runs of a project (or of every project under ./runs), with lineage and headline metrics."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ftc.cli.common import UsageError, err, out
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS

RIGHT = ("steps", "train loss", "eval loss")
COLUMNS = ("run", "status", "plan", "data", "steps", "train loss", "eval loss", "metric", "parent", "promoted")


def add_runs(verbs) -> None:
    p = verbs.add_parser(
        "runs",
        help="list a project's runs: status, plan and data hashes, steps, losses, headline metric, parent",
        description=(
            "List the runs under ./runs/<name>/ (and its smoke runs, ./runs/<name>-smoke/, marked as smoke), oldest "
            "first: run id, status, plan hash, data hash (train[/validation]), steps, train and eval loss from "
            "run.json, the tuned value of the headline metric (evaluation.headline) in eval.json, and the parent "
            "(the run whose merged/ or final/ it trained on, else the base model). With no argument, every project "
            "under ./runs."
        ),
    )
    p.add_argument("project", nargs="?", metavar="SPEC|NAME", help="a spec (.toml) or a project name; default: all")
    p.add_argument("--json", action="store_true", help="print the runs as JSON (full hashes, every metric)")
    p.set_defaults(func=cmd_runs)


def _project(value: str | None, root: Path) -> str | None:
    from ftc.runtime.runfolder import RUNS, RunFolderError, is_run, project_name

    if value is None:
        return None
    path = Path(value)
    if path.suffix == ".toml":
        try:
            return project_name(path)
        except RunFolderError as exc:
            raise UsageError(str(exc)) from None
    if is_run(path):
        raise UsageError(f"{value} is a run folder; give its project instead: ftc runs {path.resolve().parent.name}")
    if (root / RUNS / value).is_dir():
        return value
    known = sorted(p.name for p in (root / RUNS).iterdir() if p.is_dir()) if (root / RUNS).is_dir() else []
    there = f"projects there: {', '.join(known)}" if known else "there is none"
    raise UsageError(f"no runs of {value!r} in {RUNS}/ ({there}); give a spec (.toml) or a project name")


def cmd_runs(args: argparse.Namespace) -> int:
    from ftc.runtime.runfolder import RunFolderError
    from ftc.runtime.runlist import project_runs, row_of

    root = Path.cwd()
    name = _project(args.project, root)
    rows, problems = [], []
    for run_dir in project_runs(root, name):
        try:
            rows.append(row_of(run_dir, os.path.relpath(run_dir)))
        except RunFolderError as exc:
            problems.append(str(exc))
    for problem in problems:
        err.print(f"ftc runs: skipped: {problem}", markup=False)
    if args.json:
        out.print(json.dumps([row.to_json() for row in rows], indent=2), markup=False, soft_wrap=True)
    elif not rows:
        where = f"runs/{name}/" if name else "runs/"
        out.print(f"no runs in {where}" + (f"; start one with `ftc run {args.project}`" if name else ""), markup=False)
    else:
        _table(rows, several=name is None)
    return EXIT_PROBLEMS if problems else EXIT_OK


def _table(rows, several: bool) -> None:
    """Plain aligned columns (not wrapped or cut to the terminal's width: ids and hashes stay whole)."""
    head = (("project",) if several else ()) + COLUMNS
    lines = [head]
    for row in rows:
        data = "/".join(row.data_sha256[s][:8] for s in ("train", "validation") if s in row.data_sha256) or "-"
        metric = (row.headline, row.metrics[row.headline]) if row.headline in row.metrics else None
        cells = (
            row.run_id + (" (smoke)" if row.smoke else ""),
            row.status or "-",
            (row.plan_sha256 or "-")[:12],
            data,
            f"{row.step if row.step is not None else '-'}/{row.max_steps if row.max_steps is not None else '-'}",
            _num(row.train_loss),
            _num(row.eval_loss),
            f"{metric[0]} {_num(metric[1])}" if metric else "-",
            row.parent_label,
            "yes" if row.promoted else "",
        )
        lines.append(((row.project,) if several else ()) + cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        cells = (cell.rjust(w) if name in RIGHT else cell.ljust(w) for name, cell, w in zip(head, line, widths))
        text = "  ".join(cells)
        out.print(text.rstrip(), markup=False, soft_wrap=True, highlight=False)


def _num(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"
