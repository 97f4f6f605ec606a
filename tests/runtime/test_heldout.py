"""Which examples a run held out, read from the lock alone: a validation file, or the seeded share of train."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import REPO

from ftc.compiler.build.lock import read_lock
from ftc.compiler.data.read import iter_records
from ftc.compiler.plan.model import Lock
from ftc.runtime.heldout import held_out
from ftc.runtime.models import RunFolder
from ftc.runtime.runfolder import RunFolderError
from ftc.templates import prepare


def _run(case: str, tmp_path) -> RunFolder:
    return RunFolder(tmp_path, REPO, read_lock(REPO / "tests" / "golden" / case / "ftc.lock.json"))


def test_a_validation_file_gives_its_first_records(tmp_path):
    examples = held_out(_run("triage-dpo", tmp_path), 2)
    assert examples.source == "validation"
    assert examples.path == "specs/data/ticket_triage_prefs/val.jsonl"
    assert [r.line for r in examples.records] == [1, 2]
    assert set(examples.records[0].value) == {"prompt", "chosen", "rejected"}


def test_a_validation_split_gives_the_records_it_held_out(tmp_path):
    run = _run("triage-lora", tmp_path)
    examples = held_out(run, 3)
    assert examples.source == "split"
    every = list(iter_records(REPO / examples.path))
    held = prepare.held_out_indices(len(every), 0.1, 7)
    assert [r.line for r in examples.records] == [every[i].line for i in held[:3]]


def test_cleaned_data_is_read_from_the_build_while_it_hashes_as_locked(tmp_path):
    lines = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}) + "\n" for i in range(20)]
    copy = tmp_path / "build" / "cleaned" / "data" / "train.jsonl"
    copy.parent.mkdir(parents=True)
    copy.write_text("".join(lines))
    lock = read_lock(REPO / "tests" / "golden" / "triage-lora" / "ftc.lock.json").to_json()
    lock["project"]["name"] = "cleaned"
    lock["inputs"]["data"] = {"train": {"path": "data/source.jsonl", "sha256": "0" * 64, "bytes": 0}}  # never read: the run trained on the copy
    lock["data"]["validation"] = {"source": "split", "split": 0.2, "seed": 3}
    lock["artifacts"] = {"data/train.jsonl": hashlib.sha256("".join(lines).encode()).hexdigest()}
    run = RunFolder(tmp_path / "runs" / "cleaned" / "r1", tmp_path, Lock.model_validate(lock))
    examples = held_out(run, 10)
    assert examples.path == "build/cleaned/data/train.jsonl"
    assert [r.line for r in examples.records] == [i + 1 for i in prepare.held_out_indices(20, 0.2, 3)]
    copy.write_text("".join(lines[:-1]))  # recompiled with other cleaning: the run's examples are gone
    with pytest.raises(RunFolderError, match="the cleaned data this run trained on, is missing or was rebuilt"):
        held_out(run, 10)
