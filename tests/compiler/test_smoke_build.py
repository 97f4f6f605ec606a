"""The smoke build (`ftc run SPEC --smoke`): its own project and folder, a few steps, the first examples as data/,
the real inputs' hashes, and a lock that says it is a smoke build; the real build is the same with or without it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from conftest import REPO

from ftc.compiler.build.compile import compile_build
from ftc.compiler.build.smoke import MIN_TRAIN_EXAMPLES

DATA = REPO / "specs" / "data" / "ticket_triage"
SPEC = """
[project]
name = "tiny"
seed = 3

[model]
base = "{model}"

[data]
train = "data/train.jsonl"
validation = "data/val.jsonl"
format = "chat"
max_length = 1024
packing = false

[method]
kind = "lora"
r = 4
target_modules = "all-linear"

[training]
epochs = 2
batch_size = {batch}
micro_batch_size = 2
logging_steps = 5
early_stopping_patience = 2
report_to = ["tensorboard"]

[hardware]
accelerator = "cpu"
"""


def project(root: Path, tiny_model: Path, batch: int = 4) -> Path:
    (root / "data").mkdir(exist_ok=True)
    lines = DATA.joinpath("train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "data" / "train.jsonl").write_text("".join(lines[:60]), encoding="utf-8")
    val = DATA.joinpath("val.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "data" / "val.jsonl").write_text("".join(val[:12]), encoding="utf-8")
    spec = root / "spec.toml"
    spec.write_text(SPEC.format(model=os.path.relpath(tiny_model, root), batch=batch), encoding="utf-8")
    return spec


def test_a_smoke_build_trains_a_few_steps_on_the_first_examples(tmp_path, tiny_model):
    spec = project(tmp_path, tiny_model)
    real = compile_build(spec, root=tmp_path)
    smoke = compile_build(spec, root=tmp_path, smoke_steps=3)
    assert real.lock.smoke is None and "smoke" not in real.lock.to_json()
    assert smoke.name == "tiny-smoke" and smoke.directory == tmp_path / "build" / "tiny-smoke"
    assert smoke.lock.smoke.model_dump() == {"of_project": "tiny", "steps": 3, "train_examples": MIN_TRAIN_EXAMPLES, "validation_examples": 8}
    training = smoke.lock.training
    assert (training.max_steps, training.logging_steps, training.eval_steps, training.save_steps) == (3, 1, 3, 3)
    assert training.early_stopping_patience is None and training.report_to == []
    assert smoke.lock.data.splits["train"].examples == MIN_TRAIN_EXAMPLES and real.lock.data.splits["train"].examples == 60
    assert smoke.lock.data.splits["validation"].examples == 8
    subset = smoke.files["data/train.jsonl"]
    assert len(subset.text().splitlines()) == MIN_TRAIN_EXAMPLES
    assert smoke.lock.artifacts["data/train.jsonl"] == hashlib.sha256(subset.text().encode()).hexdigest()
    assert smoke.lock.inputs.data == real.lock.inputs.data  # the real files' hashes: the same data versions


def test_a_large_batch_takes_steps_times_batch_examples(tmp_path, tiny_model):
    smoke = compile_build(project(tmp_path, tiny_model, batch=16), root=tmp_path, smoke_steps=3)
    assert smoke.lock.smoke.train_examples == 48 and smoke.lock.data.splits["train"].examples == 48
