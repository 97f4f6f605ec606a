"""The examples a run held out, read the way the run read them: the validation file, or the share of the
training file that data.validation_split set aside (chosen by the project seed). A plan without validation
data falls back to the first training examples, and says so (source "train"). When the spec cleaned or
converted the data, the run trained on the build's copy (data/<split>.jsonl), so that copy is read, and
only while it still hashes as the run's lock says."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from ftc.compiler.build.compile import build_dir
from ftc.compiler.data.read import DataProblem, Record, iter_records
from ftc.compiler.hashing import FileHasher
from ftc.compiler.plan.inputs import relative_to_root
from ftc.runtime.models import RunFolder
from ftc.runtime.runfolder import LOCK, RunFolderError
from ftc.templates import prepare


@dataclass(frozen=True)
class HeldOut:
    source: str  # "validation" (a file), "split" (held out of train) or "train" (none held out: the first ones)
    path: str  # the data file, relative to the project root
    records: list[Record]


def _location(run: RunFolder, split: str) -> tuple[str, Path]:
    """The file the run read a split's examples from, as a root-relative name and a path."""
    copy = f"data/{split}.jsonl"
    if copy not in run.lock.artifacts:
        rel = run.lock.inputs.data[split].path
        return rel, run.root / rel
    path = build_dir(run.name, run.root) / copy
    rel = relative_to_root(path, run.root)
    if not path.is_file() or FileHasher(use_cache=False).sha256(path) != run.lock.artifacts[copy]:
        raise RunFolderError(
            f"{rel}, the cleaned data this run trained on, is missing or was rebuilt since; "
            f"compile the spec as it was for this run (its lock is {run.path / LOCK})"
        )
    return rel, path


def _read(run: RunFolder, split: str, limit: int | None) -> tuple[str, list[Record]]:
    rel, path = _location(run, split)
    if not path.is_file():
        raise RunFolderError(
            f'the {split} data {rel} is not under the project root {run.root} (run.json "root")'
        )
    records = []
    for item in islice(iter_records(path, rel), limit):
        if isinstance(item, DataProblem):
            raise RunFolderError(f"{item}; the data changed since the run was compiled")
        records.append(item)
    return rel, records


def held_out(run: RunFolder, n: int) -> HeldOut:
    """The first n held-out records (fewer if there are fewer)."""
    validation = run.lock.data.validation
    if "validation" in run.lock.inputs.data:
        rel, records = _read(run, "validation", n)
        return HeldOut("validation", rel, records)
    if validation.source == "split":
        rel, records = _read(run, "train", None)
        held = prepare.held_out_indices(
            len(records), validation.split, validation.seed
        )
        return HeldOut("split", rel, [records[i] for i in held[:n]])
    rel, records = _read(run, "train", n)
    return HeldOut("train", rel, records)


def training_pool(run: RunFolder, questions: HeldOut) -> tuple[str, list[Record]]:
    """The training records the run did not hold out, for few-shot prompts: every training record when the
    held-out examples come from a validation file; the ones data.validation_split kept for training; and, when
    nothing is held out (source "train"), the ones after the first len(questions.records), which are the questions."""
    rel, records = _read(run, "train", None)
    if questions.source == "split":
        validation = run.lock.data.validation
        held = set(prepare.held_out_indices(len(records), validation.split, validation.seed))
        return rel, [r for i, r in enumerate(records) if i not in held]
    if questions.source == "train":
        return rel, records[len(questions.records):]
    return rel, records
