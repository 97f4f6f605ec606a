"""Lineage, `ftc runs`, `ftc diff RUN_A RUN_B` and `ftc run --smoke`, end to end on the tiny random Llama.

One project per module: run A trains on the tiny model; run B trains on A's merged/ folder with another learning
rate and other data (a child run). Each run is 2 steps; the smoke run is 2 steps and 4 held-out answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from test_run import ftc
from tiny_runs import DATA

from ftc.compiler.build.lock import read_lock
from ftc.runtime.lineage import model_sha256
from ftc.runtime.runfolder import newest_run
from ftc.runtime.runlist import row_of

SPEC = """
[project]
name = "{name}"
seed = 3

[model]
base = "{model}"

[data]
train = "{train}"
validation = "data/val.jsonl"
format = "chat"
max_length = 1024
packing = false

[method]
kind = "lora"
r = 4
lora_alpha = 8
target_modules = "all-linear"

[training]
max_steps = 2
learning_rate = {lr}
batch_size = 4
micro_batch_size = 4
report_to = []

[hardware]
accelerator = "{accelerator}"

[evaluation]
max_new_tokens = 4
"""


def write_spec(root: Path, file: str, name: str, model: str, train: str, lr: str, accelerator: str = "cpu") -> str:
    (root / file).write_text(SPEC.format(name=name, model=model, train=train, lr=lr, accelerator=accelerator), encoding="utf-8")
    return file


def ok(result) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def only_run(root: Path, name: str) -> Path:
    (run_dir,) = sorted((root / "runs" / name).iterdir())
    return run_dir


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model):
    """Run A on the tiny model, merged; run B (learning rate and train data changed) on A's merged/."""
    root = tmp_path_factory.mktemp("lineage")
    (root / "data").mkdir()
    lines = DATA.joinpath("train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "data" / "train.jsonl").write_text("".join(lines[:24]), encoding="utf-8")
    (root / "data" / "train2.jsonl").write_text("".join(lines[4:28]), encoding="utf-8")
    val = DATA.joinpath("val.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "data" / "val.jsonl").write_text("".join(val[:4]), encoding="utf-8")
    a = write_spec(root, "a.toml", "tiny-a", os.path.relpath(tiny_model, root), "data/train.jsonl", "1e-2")
    ok(ftc(root, "compile", a))
    ok(ftc(root, "run", a, "--samples", "0"))
    run_a = only_run(root, "tiny-a")
    ok(ftc(root, "merge", str(run_a.relative_to(root))))
    merged = (run_a / "merged").relative_to(root).as_posix()
    b = write_spec(root, "b.toml", "tiny-b", merged, "data/train2.jsonl", "5e-3")
    ok(ftc(root, "compile", b))
    ok(ftc(root, "run", b, "--samples", "0"))
    return root, run_a, only_run(root, "tiny-b")


def test_a_run_records_its_base_model_and_data_versions(project):
    root, run_a, _ = project
    rec, lock = record(run_a), read_lock(run_a / "ftc.lock.json")
    assert rec["parent"] == {"base": lock.inputs.model.reference, "kind": "folder", "sha256": model_sha256(lock.inputs.model)}
    assert rec["data_sha256"] == {split: entry.sha256 for split, entry in lock.inputs.data.items()}
    assert rec["data_sha256"]["train"] == hashlib.sha256((root / "data" / "train.jsonl").read_bytes()).hexdigest()
    assert "smoke" not in rec


def test_a_child_run_names_the_run_whose_merged_folder_it_trained_on(project):
    _, run_a, run_b = project
    parent = record(run_b)["parent"]
    assert parent["base"] == f"runs/tiny-a/{run_a.name}/merged"
    assert parent["run"] == {
        "path": parent["base"], "folder": "merged", "run_id": run_a.name, "project": "tiny-a",
        "plan_sha256": record(run_a)["plan_sha256"],
    }
    assert parent["sha256"] == model_sha256(read_lock(run_b / "ftc.lock.json").inputs.model)


def test_runs_lists_each_run_with_its_lineage(project):
    root, run_a, run_b = project
    listed = ftc(root, "runs", "--json")
    ok(listed)
    rows = {row["project"]: row for row in json.loads(listed.stdout)}
    assert rows["tiny-a"]["run_id"] == run_a.name and rows["tiny-a"]["status"] == "completed"
    assert rows["tiny-a"]["step"] == 2 and rows["tiny-a"]["train_loss"] == record(run_a)["train_loss"]
    assert rows["tiny-b"]["parent"]["run"]["run_id"] == run_a.name
    assert rows["tiny-b"]["data_sha256"]["train"] != rows["tiny-a"]["data_sha256"]["train"]
    assert rows["tiny-a"]["promoted"] is None and rows["tiny-a"]["smoke"] is False
    table = ftc(root, "runs", "b.toml")
    ok(table)
    header, line = table.stdout.splitlines()
    assert header.split()[:3] == ["run", "status", "plan"] and "promoted" in header
    assert line.split()[:3] == [run_b.name, "completed", record(run_b)["plan_sha256"][:12]]
    assert f"tiny-a/{run_a.name}" in line and "2/2" in line


def test_an_old_run_json_without_lineage_still_lists_from_its_lock(project, tmp_path):
    _, run_a, _ = project
    old = tmp_path / "runs" / "tiny-a" / run_a.name
    shutil.copytree(run_a, old, ignore=shutil.ignore_patterns("merged", "final", "checkpoints"))
    rec = {k: v for k, v in record(run_a).items() if k not in ("parent", "data_sha256")}
    (old / "run.json").write_text(json.dumps(rec), encoding="utf-8")
    row = row_of(old, "old")
    assert row.parent == record(run_a)["parent"] and row.data_sha256 == record(run_a)["data_sha256"]


def test_diff_of_two_runs_shows_lineage_plan_and_outcome(project):
    root, run_a, run_b = project
    a, b = str(run_a.relative_to(root)), str(run_b.relative_to(root))
    shown = ftc(root, "diff", a, b)
    ok(shown)
    text = shown.stdout
    for expected in (
        "lineage", f"parent: {os.path.relpath(record(run_a)['parent']['base'])}", f"-> tiny-a/{run_a.name}",
        "train data: sha256", "learning rate: 0.01 -> 0.005", "train data: data/train.jsonl -> data/train2.jsonl",
        "outcome", "train loss:",
    ):
        assert expected in text, text
    assert "validation data" not in text  # the same file on both sides
    assert ftc(root, "diff", a, b, "--exit-code").returncode == 1
    same = ftc(root, "diff", a, a, "--exit-code")
    assert same.returncode == 0 and "no differences" in same.stdout


def test_bad_inputs_are_named(project, tmp_path):
    root, run_a, _ = project
    a = str(run_a.relative_to(root))
    assert_usage(ftc(root, "runs", a), "is a run folder; give its project instead: ftc runs tiny-a")
    assert_usage(ftc(root, "runs", "nothere"), "no runs of 'nothere' in runs/ (projects there: tiny-a, tiny-b")
    assert_usage(ftc(root, "diff", a, "data"), "data has no ftc.lock.json; give a build folder, a run folder")
    broken = tmp_path / "broken"
    shutil.copytree(run_a, broken, ignore=shutil.ignore_patterns("merged", "final", "checkpoints"))
    (broken / "run.json").write_text("{", encoding="utf-8")
    done = ftc(root, "diff", a, str(broken))
    assert done.returncode == 1 and "run.json is not valid JSON" in done.stderr and "Traceback" not in done.stderr


def assert_usage(done, message: str) -> None:
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_smoke_checks_the_pipeline_without_touching_the_real_run(project):
    root, run_a, _ = project
    build_before, runs_before = tree_hashes(root / "build" / "tiny-a"), tree_hashes(root / "runs" / "tiny-a")
    done = ftc(root, "run", "a.toml", "--smoke", "--smoke-steps", "2")
    ok(done)
    assert "smoke passed in" in done.stdout and "trained 2 step(s), loss " in done.stdout, done.stdout
    assert "eval ran on 4 held-out example(s)" in done.stdout and "the real run (2 steps) would take about" in done.stdout
    assert tree_hashes(root / "build" / "tiny-a") == build_before
    assert tree_hashes(root / "runs" / "tiny-a") == runs_before
    assert newest_run(root / "a.toml", root) == run_a
    smoke = only_run(root, "tiny-a-smoke")
    assert record(smoke)["smoke"] is True and record(smoke)["status"] == "completed"
    assert record(smoke)["data_sha256"] == record(run_a)["data_sha256"]  # the same data versions, a subset of them
    lock = read_lock(root / "build" / "tiny-a-smoke" / "ftc.lock.json")
    assert lock.smoke is not None and lock.smoke.of_project == "tiny-a" and lock.training.max_steps == 2
    assert (root / "build" / "tiny-a-smoke" / "data" / "train.jsonl").is_file()
    assert (smoke / "eval.json").is_file()
    rows = json.loads(ftc(root, "runs", "a.toml", "--json").stdout)
    assert [(r["run_id"], r["smoke"]) for r in rows] == [(run_a.name, False), (smoke.name, True)]
    refused = ftc(root, "run", "build/tiny-a-smoke")
    assert refused.returncode == 1 and "is the smoke build of tiny-a" in refused.stderr


def test_smoke_names_the_stage_that_failed(project, tiny_model):
    root, _, _ = project
    spec = write_spec(root, "cuda.toml", "tiny-cuda", os.path.relpath(tiny_model, root), "data/train.jsonl", "1e-2", "cuda")
    done = ftc(root, "run", spec, "--smoke")
    if done.returncode == 0:
        pytest.skip("this machine has CUDA: the device stage passes")
    assert done.returncode == 1 and "ftc run --smoke: failed at device:" in done.stderr, done.stderr
    assert not (root / "runs" / "tiny-cuda").exists()
