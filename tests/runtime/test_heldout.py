"""Which examples a run held out, read from the lock alone: a validation file, or the seeded share of train."""

from __future__ import annotations

import json

from conftest import REPO
from ftc.compiler.data import iter_records
from ftc.runtime.heldout import held_out
from ftc.runtime.models import RunFolder
from ftc.templates import prepare


def _run(case: str, tmp_path) -> RunFolder:
    lock = json.loads((REPO / "tests" / "golden" / case / "ftc.lock.json").read_text())
    return RunFolder(tmp_path, REPO, lock)


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
