"""What `ftc report RUN` shows, gathered from the run folder into one `Report` value (page.py renders it).

See page.py for what each part of the page reads. Token lengths are measured again as `ftc data check` measures
them, but only while the spec, the data and the model still hash as the run's lock records and the counts agree
with the lock's; otherwise the report says what changed rather than plotting other data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler.build.lock import plan_hash
from ftc.compiler.hashing import FileHasher
from ftc.compiler.plan.model import Lock
from ftc.runtime.report.rewards import reward_points
from ftc.runtime.runfolder import (
    EVAL,
    EVAL_ENDPOINT,
    SAMPLES,
    EvalRecord,
    ParityCheck,
    RunFolderError,
    RunRecord,
    read_events,
    read_record,
    run_lock,
)
from ftc.runtime.runfolder import read_evaluation as read_eval_record

ANSWERS_SHOWN = 5
ANSWER_CHARS = 2000  # per text on the page; the JSON files keep them whole


@dataclass(frozen=True)
class SplitLengths:
    """Tokens per example of one split, as `ftc data check` measures them."""

    name: str
    file: str  # the data file, relative to the project root, as the lock names it
    lengths: tuple[int, ...]
    summary: dict[str, Any]  # datacheck's SplitReport.as_dict(): spread, histogram, overlong counts


@dataclass(frozen=True)
class Report:
    """Everything the page shows, gathered from a run folder."""

    run: str  # the run folder as the page names it: relative to the project root when it lies below it
    record: RunRecord
    lock: Lock
    plan_hash: str
    train_loss: tuple[tuple[int, float], ...]
    validation_loss: tuple[tuple[int, float], ...]
    rewards: dict[str, tuple[tuple[int, float], ...]]  # GRPO and RLOO: each logged reward statistic by step
    lengths: tuple[SplitLengths, ...]
    lengths_note: str | None  # why there is no histogram
    evaluation: EvalRecord | None
    evaluation_note: str | None  # eval.json unreadable, or made for another plan
    answers: tuple[dict[str, Any], ...]
    answers_source: str | None  # EVAL or SAMPLES
    answers_total: int
    answers_note: str | None
    parity: dict[str, ParityCheck]  # mode -> the parity record `ftc serve` left in run.json
    served: EvalRecord | None  # eval-endpoint.json
    served_note: str | None

    @property
    def notes(self) -> list[str]:
        return [n for n in (self.lengths_note, self.evaluation_note, self.answers_note, self.served_note) if n]


# ---- gathering ------------------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    """A number the run recorded (not a bool, which JSON keeps apart)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def loss_points(events: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, loss) and (step, eval_loss) in step order, as the run's surviving sessions logged them."""
    train: dict[int, float] = {}
    validation: dict[int, float] = {}
    for event in events:
        kind, step = event.get("event"), event.get("step")
        if not isinstance(step, int):
            continue
        if kind == "train_begin":  # a session (re)starts at `step`: what was logged beyond it was trained again
            for points in (train, validation):
                for later in [s for s in points if s > step]:
                    del points[later]
        elif kind == "log":
            if is_number(event.get("loss")):
                train[step] = float(event["loss"])
            if is_number(event.get("eval_loss")):
                validation[step] = float(event["eval_loss"])
    return sorted(train.items()), sorted(validation.items())


def _shown_run(run_dir: Path, root: Path) -> str:
    try:
        return run_dir.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(run_dir.resolve())


def _changed_inputs(run_dir: Path, root: Path, lock: Lock) -> list[str]:
    """The inputs that token lengths depend on and that no longer hash as the run's lock records."""
    from ftc.runtime.models import RunFolder, check_base_unchanged

    inputs = lock.inputs
    files = [inputs.spec] + [inputs.data[split] for split in sorted(inputs.data)]
    changed = []
    with FileHasher() as hasher:
        for entry in files:
            path = root / entry.path
            if not path.is_file():
                changed.append(f"{entry.path} is gone")
            elif hasher.sha256(path) != entry.sha256:
                changed.append(f"{entry.path} changed since this run (its sha256 is not the one in the run's ftc.lock.json)")
    try:
        check_base_unchanged(RunFolder(run_dir, root, lock))
    except RunFolderError as exc:
        changed.append(str(exc))
    return changed


def token_lengths(run_dir: Path, root: Path, lock: Lock) -> tuple[tuple[SplitLengths, ...], str | None]:
    """Each split's tokens per example, measured by `ftc data check` on the run's spec; or why they are not."""
    from ftc.compiler.data.check import check_data, token_errors

    spec = lock.inputs.spec.path
    changed = _changed_inputs(run_dir, root, lock)
    if changed:
        return (), f"token lengths not drawn, as they would describe other data than this run trained on: {'; '.join(changed)}"
    try:
        report = check_data(root / spec, root)
    except (OSError, ValueError) as exc:
        return (), f"token lengths not drawn: `ftc data check {spec}` failed: {exc}"
    locked = lock.data.splits
    if not report.splits:
        problems = [str(p) for p in report.problems] + [d.headline() for d in report.diagnostics if d.is_error]
        return (), f"token lengths not drawn: `ftc data check {spec}` measured nothing: {'; '.join(problems[:3]) or 'no data'}"
    out = []
    for split in report.splits:
        expected = locked.get(split.name)
        counted = (expected.examples, expected.tokens) if expected is not None else (None, None)
        now = (split.stats.examples, split.stats.tokens)
        if now != counted:
            return (), (
                f"token lengths not drawn: `ftc data check {spec}` now counts {now[0]:,} examples and {now[1]:,} tokens "
                f"in {split.name}, and the run's plan counted {counted[0]} and {counted[1]} "
                "(the compiler or its tokenizer changed since the run)"
            )
        entry = lock.inputs.data.get(split.name) or lock.inputs.data.get("train")
        file = entry.path if entry is not None else split.file
        summary = split.as_dict(report.max_length, report.packing_strategy)
        out.append(SplitLengths(split.name, file, tuple(sorted(split.stats.lengths)), summary))
    errors = token_errors(report.splits)
    return tuple(out), ("; ".join(errors) if errors else None)


def read_evaluation(run_dir: Path, plan: str, run: str, name: str = EVAL) -> tuple[EvalRecord | None, str | None]:
    """eval.json (or eval-endpoint.json) when there is a readable one, and a note when it is unreadable or made
    for another plan."""
    again = f"ftc eval {run}" + (" --endpoint URL" if name == EVAL_ENDPOINT else "")
    try:
        evaluation = read_eval_record(run_dir, name)
    except RunFolderError as exc:
        return None, f"{exc}: run `{again}` again"
    if evaluation is None:
        return None, None
    made_for = evaluation.plan_hash
    if made_for and made_for != plan:
        return evaluation, f"{name} was made for plan sha256:{made_for[:12]}, and this run's plan is sha256:{plan[:12]}"
    return evaluation, None


def read_answers(run_dir: Path, evaluation: EvalRecord | None) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """The answers to show: eval.json's when it has some, else samples.json's; with their file and a note."""
    if evaluation and evaluation.answers:
        return [a.to_json() for a in evaluation.answers], EVAL, None
    path = run_dir / SAMPLES
    if not path.is_file():
        return [], None, None
    try:
        samples = json.loads(path.read_text(encoding="utf-8")).get("samples") or []
    except (ValueError, AttributeError) as exc:
        return [], None, f"{SAMPLES} is unreadable ({exc})"
    return list(samples), SAMPLES, None


def gather_report(run_dir: Path, step: Callable[[str], None] = lambda label: None) -> Report:
    """Read a run folder (and, for token lengths, its project's spec and data). Raises RunFolderError."""
    record = read_record(run_dir)
    lock = run_lock(run_dir)
    root = record.project_root(run_dir)
    run = _shown_run(run_dir, root)
    plan = record.plan_sha256 or plan_hash(lock)
    events = read_events(run_dir)
    train, validation = loss_points(events)
    step("measuring token lengths (as `ftc data check` does)")
    lengths, lengths_note = token_lengths(run_dir, root, lock)
    evaluation, evaluation_note = read_evaluation(run_dir, plan, run)
    answers, source, answers_note = read_answers(run_dir, evaluation)
    served, served_note = read_evaluation(run_dir, plan, run, EVAL_ENDPOINT)
    return Report(
        run=run,
        record=record,
        lock=lock,
        plan_hash=plan,
        train_loss=tuple(train),
        validation_loss=tuple(validation),
        rewards=reward_points(events),
        lengths=lengths,
        lengths_note=lengths_note,
        evaluation=evaluation,
        evaluation_note=evaluation_note,
        answers=tuple(answers[:ANSWERS_SHOWN]),
        answers_source=source,
        answers_total=len(answers),
        answers_note=answers_note,
        parity=record.parity,
        served=served,
        served_note=served_note,
    )
