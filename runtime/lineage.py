"""Lineage: what a run trained on top of, and which data, as run.json records it when the run starts.

The parent is the base model as the lock names it, with one hash over the lock's hashes of its files; when that
base is another run's merged/ or final/ folder (a retrain on top of a champion), the run that made it is named
too: its folder, run id, project and plan hash. The data versions are the lock's sha256 of each split's file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ftc.compiler.plan.model import Lock, ModelInput
from ftc.runtime.runfolder import FINAL, MERGED, Parent, ParentRun, RunFolderError, is_run, read_record


def model_sha256(model: ModelInput) -> str:
    """One hash of a model input: over its files' names and sha256 as the lock lists them (sorted)."""
    digest = hashlib.sha256()
    for name, sha in sorted(model.files.items()):
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()


def parent_run(base: Path, reference: str) -> ParentRun | None:
    """The run whose merged/ or final/ folder `base` is; None when it is no such folder (or unreadable)."""
    if base.name not in (MERGED, FINAL) or not is_run(base.parent):
        return None
    try:
        record = read_record(base.parent)
    except RunFolderError:
        return ParentRun(path=reference, folder=base.name, run_id=base.parent.name)
    return ParentRun(
        path=reference, folder=base.name, run_id=record.run_id or base.parent.name, project=record.project,
        plan_sha256=record.plan_sha256,
    )


def parent_of(lock: Lock, root: Path) -> Parent:
    """The parent of a run of `lock` in the project at `root`."""
    model = lock.inputs.model
    run = parent_run((root / model.reference).resolve(), model.reference) if model.local_reference else None
    optional = {"revision": model.revision, "run": run}
    return Parent(base=model.reference, kind=model.kind, sha256=model_sha256(model), **{k: v for k, v in optional.items() if v})


def data_versions(lock: Lock) -> dict[str, str]:
    """split -> the sha256 of its data file, as the lock hashes it."""
    return {split: entry.sha256 for split, entry in sorted(lock.inputs.data.items())}


def lineage(lock: Lock, root: Path) -> dict:
    """run.json's lineage fields for a new run of `lock`: parent, data_sha256, and smoke for a smoke build."""
    return {"parent": parent_of(lock, root), "data_sha256": data_versions(lock), **({"smoke": True} if lock.smoke else {})}
