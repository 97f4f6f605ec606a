"""`ftc promote`: which run of a project is the one to serve (the champion), and how it came to be.

runs/<name>/promoted.json (`PromotedRecord`, written whole and atomically) holds the current run and every
promotion and rollback, each with its run id, plan hash, time, user, reason and evidence. A run is promoted
only with evidence: it completed, its merge is verified (run.json "merge"), its eval.json gates hold for its
plan, and, when another run is current, its against.json (`ftc eval RUN --against CHAMPION`) passed against
that run. `force` promotes without, and records what it overrode. A rollback makes the run that was current
before the current one current again: promotions form a stack, and a rollback pops it.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ftc.compiler.atomic import write_atomic
from ftc.compiler.build.lock import plan_hash
from ftc.runtime.records import PromotedRecord, Promotion
from ftc.runtime.runfolder import (
    PROMOTED,
    PROMOTED_FORMAT,
    RunFolderError,
    is_run,
    read_evaluation,
    read_record,
    run_lock,
    runs_folder,
)


class PromotionRefused(RunFolderError):
    """The run lacks the evidence a promotion needs; the message says what to run."""


@dataclass(frozen=True)
class Outcome:
    record: PromotedRecord
    entry: Promotion
    path: Path


def promoted_path(project_dir: Path) -> Path:
    """runs/<name>/promoted.json, beside the run folders."""
    return project_dir / PROMOTED


def read_promoted(project_dir: Path) -> PromotedRecord | None:
    """The project's promoted.json; None when nothing was ever promoted."""
    path = promoted_path(project_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc}); it was edited or cut short") from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != PROMOTED_FORMAT:
        raise RunFolderError(f"{path} has format_version {version!r}; this ftc reads version {PROMOTED_FORMAT}")
    try:
        return PromotedRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise RunFolderError(f"{path} does not read as this ftc's record: {where}: {first['msg']}") from None


def stack(record: PromotedRecord | None) -> list[str]:
    """The promoted runs, oldest first, as the history leaves them: a promotion pushes, a rollback pops."""
    runs: list[str] = []
    for entry in record.history if record else ():
        if entry.action == "rollback":
            if runs:
                runs.pop()
        else:
            runs.append(entry.run)
    return runs


def promoted_run(project_dir: Path) -> Path | None:
    """The run folder promoted.json names as current; None when nothing is promoted."""
    record = read_promoted(project_dir)
    if record is None or record.current is None:
        return None
    run = project_dir / record.current
    if not is_run(run):
        raise RunFolderError(f"{promoted_path(project_dir)} names run {record.current}, but {run} is not a run folder")
    return run


def _plan_hash(run_dir: Path) -> str:
    return read_record(run_dir).plan_sha256 or plan_hash(run_lock(run_dir))


def evidence(run_dir: Path, current: str | None) -> tuple[dict[str, Any], list[str]]:
    """What vouches for the run, and each reason it may not be promoted (with what to run)."""
    from ftc.runtime.evaluate.against import read_against  # it imports the evaluation stack: only when promoting

    record = read_record(run_dir)
    plan = _plan_hash(run_dir)
    problems: list[str] = []
    found: dict[str, Any] = {"status": record.status}
    if record.status != "completed":
        problems.append(f"the run did not complete (status {record.status or 'unknown'}); finish it with `ftc run --resume {run_dir}`")
    if record.smoke:
        problems.append("it is a smoke run (`ftc run --smoke`), a check of the pipeline; promote a real run")
    merge = record.merge.status if record.merge else None
    found["merge"] = merge
    if merge not in ("verified", "not needed"):
        why = "its merge failed verification" if merge == "failed" else "it has no verified merge"
        problems.append(f"{why}; run `ftc merge {run_dir}`")
    try:
        evaluation = read_evaluation(run_dir)
    except RunFolderError as exc:
        evaluation = None
        problems.append(f"{exc}; run `ftc eval {run_dir}`")
    else:
        if evaluation is None:
            problems.append(f"it has no eval.json; run `ftc eval {run_dir}`")
    if evaluation is not None:
        failed = [g.gate for g in evaluation.gates if not g.holds]
        found["eval"] = {"plan_hash": evaluation.plan_hash, "gates": len(evaluation.gates), "failed": failed}
        if evaluation.plan_hash and evaluation.plan_hash != plan:
            problems.append(f"its eval.json scored another plan; run `ftc eval {run_dir}` again")
        elif failed:
            problems.append(f"it failed its eval gates ({'; '.join(failed)}); see `ftc eval {run_dir}`")
    if current is not None and current != run_dir.name:
        champion_dir = run_dir.parent / current
        champion_plan = _plan_hash(champion_dir) if is_run(champion_dir) else None
        try:
            against = read_against(run_dir)
        except RunFolderError as exc:
            against, reason = None, str(exc)
        else:
            reason = "it has no against.json"
        hint = f"run `ftc eval {run_dir} --against {champion_dir}`"
        if against is None:
            problems.append(f"{current} is the promoted run and {reason}; {hint}")
        else:
            found["against"] = {
                "champion": against.champion.run, "champion_plan_hash": against.champion.plan_hash,
                "passed": against.verdict.passed, "headline": against.verdict.headline,
                "headline_delta": (against.metrics.get(against.verdict.headline or "") or {}).get("delta"),
                "failures": list(against.verdict.failures),
            }
            if against.champion.run != current or (champion_plan and against.champion.plan_hash != champion_plan):
                problems.append(f"its against.json compares with {against.champion.run}, not the promoted run {current}; {hint}")
            elif against.plan_hash != plan:
                problems.append(f"its against.json scored another plan of this run; {hint}")
            elif not against.verdict.passed:
                problems.append(f"it failed the regression gate against {current} ({'; '.join(against.verdict.failures)})")
    return found, problems


def _write(project_dir: Path, record: PromotedRecord) -> Path:
    path = promoted_path(project_dir)
    write_atomic(path, json.dumps(record.to_json(), indent=2, ensure_ascii=False) + "\n")
    return path


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        return None


def promote(run_dir: Path, reason: str | None = None, force: bool = False) -> Outcome:
    """Make the run current for its project (runs/<name>/promoted.json); refused without evidence unless `force`."""
    record = read_record(run_dir)
    project = run_lock(run_dir).project.name
    project_dir = run_dir.parent
    if record.project and record.project != project or project_dir.name != project:
        raise PromotionRefused(f"{run_dir} is not under runs/{project}/, where its project's runs live")
    previous = read_promoted(project_dir)
    current = previous.current if previous else None
    if current == run_dir.name:
        raise PromotionRefused(f"{run_dir.name} is already the promoted run of {project}")
    found, problems = evidence(run_dir, current)
    if problems and not force:
        raise PromotionRefused(f"{run_dir} cannot be promoted: " + "; ".join(problems) + " (or promote it anyway with --force)")
    if problems:
        found["overridden"] = problems
    entry = Promotion(
        action="promote", run=run_dir.name, plan_hash=_plan_hash(run_dir), when=_now(), user=_user(),
        reason=reason, forced=bool(problems), previous=current, evidence=found,
    )
    history = (previous.history if previous else ()) + (entry,)
    updated = PromotedRecord(format_version=PROMOTED_FORMAT, project=project, current=run_dir.name, history=history)
    return Outcome(updated, entry, _write(project_dir, updated))


def rollback(project_dir: Path, reason: str | None = None) -> Outcome:
    """Make the run promoted before the current one current again."""
    previous = read_promoted(project_dir)
    runs = stack(previous)
    if previous is None or len(runs) < 2:
        what = "nothing was promoted" if not runs else f"{runs[-1]} is the only promoted run"
        raise PromotionRefused(f"{project_dir.name} has no earlier promoted run to roll back to: {what}")
    back = runs[-2]
    run_dir = project_dir / back
    if not is_run(run_dir):
        raise PromotionRefused(f"the earlier promoted run {back} is gone from {project_dir}; nothing to roll back to")
    entry = Promotion(
        action="rollback", run=back, plan_hash=_plan_hash(run_dir), when=_now(), user=_user(), reason=reason,
        previous=previous.current, evidence={"rolled_back": previous.current},
    )
    updated = PromotedRecord(format_version=PROMOTED_FORMAT, project=previous.project, current=back, history=previous.history + (entry,))
    return Outcome(updated, entry, _write(project_dir, updated))


def project_dir_of(target: str, root: Path) -> Path:
    """The runs/<name>/ folder a NAME means: a project name, a spec, a run folder or runs/<name>/ itself."""
    path = Path(target)
    if path.is_dir() and is_run(path):
        return path.parent
    if path.is_dir() and (promoted_path(path).is_file() or any(is_run(p) for p in path.iterdir())):
        return path
    if path.is_file() and path.suffix == ".toml":
        from ftc.runtime.runfolder import project_name

        return runs_folder(root, project_name(path))
    folder = runs_folder(root, target)
    if "/" in target or not folder.is_dir():
        raise RunFolderError(f"no project {target!r}: there is no {folder} (give a project name, a spec or a run folder)")
    return folder
