"""`ftc run` end to end on the tiny random Llama: the run record, resume after kill -9 and after Ctrl-C
(both must end with weights bit-identical to an uninterrupted run), damaged checkpoints, and refusals.

One project is compiled per module; the uninterrupted run is the reference the other runs are compared with.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from ctrl_c import ctrl_c_while_frozen
from safetensors.torch import load_file

from ftc.compiler.build.compile import compile_build, write_build
from ftc.compiler.plan.resolve import installed_versions

MAX_STEPS, SAVE_STEPS = 30, 5
DATA = REPO / "specs" / "data" / "ticket_triage"
SPEC = """
[project]
name = "tiny-run"
seed = 3

[model]
base = "{model}"

[data]
train = "data/train.jsonl"
validation = "data/val.jsonl"
format = "chat"
max_length = 1024
packing = true

[method]
kind = "lora"
r = 4
lora_alpha = 8
lora_dropout = 0.1             # dropout draws random numbers: resume must restore the RNG state
target_modules = "all-linear"

[training]
max_steps = {max_steps}
save_steps = {save_steps}
learning_rate = 2e-4
batch_size = 4
micro_batch_size = 2
logging_steps = 5
report_to = ["tensorboard"]

[hardware]
accelerator = "{accelerator}"
"""


def write_project(root: Path, tiny_model: Path, accelerator: str = "cpu") -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    lines = DATA.joinpath("train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "data" / "train.jsonl").write_text("".join(lines[:24]), encoding="utf-8")
    val = DATA.joinpath("val.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "data" / "val.jsonl").write_text("".join(val[:4]), encoding="utf-8")
    model = os.path.relpath(tiny_model, root)
    spec = root / "spec.toml"
    spec.write_text(SPEC.format(model=model, max_steps=MAX_STEPS, save_steps=SAVE_STEPS, accelerator=accelerator), encoding="utf-8")
    return spec


def ftc(root: Path, *args: str, wait: bool = True, **kwargs):
    command = [sys.executable, "-m", "ftc.cli", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # two test workers share two cores
    if not wait:
        return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def runs(root: Path) -> list[Path]:
    return sorted((root / "runs" / "tiny-run").glob("*"))


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def adapter(run_dir: Path) -> dict:
    return load_file(str(run_dir / "final" / "adapter_model.safetensors"))


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def wait_for_seal(root: Path, step: int, process, timeout: float = 300) -> Path:
    """The new run's folder, once checkpoint-<step> is sealed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        for run_dir in runs(root):
            if (run_dir / "checkpoints" / f"checkpoint-{step}" / "ftc-checkpoint.json").is_file() and "status" in record(run_dir):
                if record(run_dir)["status"] == "running":
                    return run_dir
        time.sleep(0.05)
    raise AssertionError(f"checkpoint-{step} was not sealed within {timeout} s")


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model):
    """A compiled project and its uninterrupted reference run."""
    root = tmp_path_factory.mktemp("run-project")
    write_project(root, tiny_model)
    compiled = ftc(root, "compile", "spec.toml")
    assert compiled.returncode == 0, compiled.stderr
    result = ftc(root, "run", "spec.toml", "--samples", "0")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (reference,) = runs(root)
    return root, reference, result.stdout


def test_run_record_says_what_ran_and_how_it_ended(project):
    root, reference, stdout = project
    rec = record(reference)
    lock = json.loads((root / "build" / "tiny-run" / "ftc.lock.json").read_text(encoding="utf-8"))
    assert (reference / "ftc.lock.json").read_text(encoding="utf-8") == (root / "build" / "tiny-run" / "ftc.lock.json").read_text(encoding="utf-8")
    assert rec["status"] == "completed" and rec["exit_code"] == 0
    assert rec["step"] == rec["max_steps"] == MAX_STEPS == lock["training"]["max_steps"]
    assert len(rec["plan_sha256"]) == 64 and rec["plan_sha256"].startswith(stdout.split("plan sha256:")[1][:12])
    assert rec["packages"]["torch"] == lock["packages"]["torch"]
    assert rec["device"] == {"kind": "cpu", "name": "cpu", "precision": "fp32", "threads": rec["device"]["threads"]}
    assert 0 < rec["train_loss"] < 10 and 0 < rec["eval_loss"] < 10
    assert rec["tokens_per_second"] > 0
    assert rec["peak_memory_bytes"] > 100 * 2**20 and rec["peak_memory_kind"] == "max resident set"
    assert rec["started"] <= rec["ended"]
    assert rec["final"] == "final" and (reference / "final" / "adapter_model.safetensors").is_file()
    assert (reference / "final" / "chat_template.jinja").read_text(encoding="utf-8") == (root / "build" / "tiny-run" / "chat_template.jinja").read_text(encoding="utf-8")
    # checkpoints are sealed, and only save_total_limit (2) of them are kept
    kept = sorted(p.name for p in (reference / "checkpoints").glob("checkpoint-*"))
    assert kept == ["checkpoint-25", "checkpoint-30"]
    assert all((reference / "checkpoints" / name / "ftc-checkpoint.json").is_file() for name in kept)
    assert list((reference / "logs").rglob("events.out.tfevents.*"))
    # the progress lines and the summary
    assert f"step {MAX_STEPS}/{MAX_STEPS}  loss" in stdout and "eval_loss" in stdout
    assert "completed: step 30/30" in stdout and "tokens/s" in stdout and "peak memory" in stdout
    assert "{'loss'" not in stdout  # the trainer's own log lines give way to ftc's
    assert "train: 24 examples" in stdout and "carry loss" in stdout


def test_kill_9_then_resume_gives_the_same_weights(project):
    root, reference, _ = project
    process = ftc(root, "run", "spec.toml", "--samples", "0", wait=False)
    run_dir = wait_for_seal(root, 10, process)
    os.kill(record(run_dir)["sessions"][-1]["pid"], signal.SIGKILL)
    assert process.wait(timeout=60) == 128 + signal.SIGKILL
    crashed = record(run_dir)
    assert crashed["status"] == "crashed (killed by SIGKILL)" and crashed["final"] is None
    assert not (run_dir / "final").exists()
    # a checkpoint cut short by the crash: no seal, a truncated file. It must never be resumed from.
    newest = max((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    torn = run_dir / "checkpoints" / f"checkpoint-{int(newest.name.split('-')[1]) + SAVE_STEPS}"
    shutil.copytree(newest, torn)
    (torn / "ftc-checkpoint.json").unlink()
    weights = torn / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    resumed = ftc(root, "run", "spec.toml", "--resume", "--samples", "0")  # the newest run of the build
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert f"skipping {torn.name}: it has no ftc-checkpoint.json" in resumed.stdout
    assert (run_dir / "checkpoints" / f"incomplete-{torn.name}").is_dir()  # kept aside, not deleted
    assert f"resuming from {newest.name}" in resumed.stdout
    rec = record(run_dir)
    assert rec["status"] == "completed" and rec["step"] == MAX_STEPS
    assert [s["status"] for s in rec["sessions"]] == ["crashed (killed by SIGKILL)", "completed"]
    assert rec["sessions"][1]["resumed_from"] == newest.name
    difference = max_difference(adapter(reference), adapter(run_dir))
    print(f"resume after kill -9 at step {newest.name}: max |difference| of final adapter weights = {difference}")
    assert difference == 0.0


def test_ctrl_c_saves_a_checkpoint_and_stops_cleanly(project):
    root, reference, _ = project
    process = ftc(root, "run", "spec.toml", "--samples", "0", wait=False)
    run_dir = wait_for_seal(root, 5, process)
    ctrl_c_while_frozen(process, [record(run_dir)["sessions"][-1]["pid"]])  # ftc passes it on to the script once
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output[-4000:]
    rec = record(run_dir)
    stopped = rec["step"]
    assert rec["status"] == "interrupted" and 5 <= stopped < MAX_STEPS, output[-3000:]
    assert (run_dir / "checkpoints" / f"checkpoint-{stopped}" / "ftc-checkpoint.json").is_file(), "no checkpoint at the step it stopped"
    assert f"continue with: ftc run spec.toml --resume {run_dir.relative_to(root).as_posix()}" in output

    resumed = ftc(root, "run", "spec.toml", "--resume", str(run_dir), "--samples", "0")
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert f"resuming from checkpoint-{stopped}" in resumed.stdout
    assert max_difference(adapter(reference), adapter(run_dir)) == 0.0


def test_a_damaged_checkpoint_is_named_and_skipped(project):
    root, reference, _ = project
    process = ftc(root, "run", "spec.toml", "--samples", "0", wait=False)
    run_dir = wait_for_seal(root, 15, process)
    os.kill(record(run_dir)["sessions"][-1]["pid"], signal.SIGKILL)
    process.wait(timeout=60)
    newest = max((p for p in (run_dir / "checkpoints").glob("checkpoint-*")), key=lambda p: int(p.name.split("-")[1]))
    weights = newest / "adapter_model.safetensors"
    damaged = bytearray(weights.read_bytes())
    damaged[-1] ^= 0xFF  # one flipped bit: same size, different content
    weights.write_bytes(bytes(damaged))

    resumed = ftc(root, "run", "spec.toml", "--resume", str(run_dir), "--samples", "0")
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert f"skipping {newest.name}: adapter_model.safetensors does not match its sha256 in the seal" in resumed.stdout
    assert (run_dir / "checkpoints" / f"corrupt-{newest.name}").is_dir()
    assert max_difference(adapter(reference), adapter(run_dir)) == 0.0  # from the older checkpoint, to the same end


def test_resume_refuses_a_finished_run_and_another_plan(project, tmp_path):
    root, reference, _ = project
    finished = ftc(root, "run", "spec.toml", "--resume", str(reference))
    assert finished.returncode == 1 and "has already completed" in finished.stderr
    spec = root / "spec.toml"
    original = spec.read_text(encoding="utf-8")
    try:
        spec.write_text(original.replace("learning_rate = 2e-4", "learning_rate = 3e-4"), encoding="utf-8")
        assert ftc(root, "compile", "spec.toml").returncode == 0
        other = ftc(root, "run", "spec.toml", "--resume", str(reference))
        assert other.returncode == 1 and "a resumed run must continue the same plan" in other.stderr
    finally:
        spec.write_text(original, encoding="utf-8")
        assert ftc(root, "compile", "spec.toml").returncode == 0


def test_resume_refuses_a_run_that_is_still_running(project):
    root, reference, _ = project
    copy = reference.with_name("still-running")
    shutil.copytree(reference, copy)
    rec = record(copy)
    rec.update(status="running", pid=os.getpid())  # this test's own process: certainly alive
    (copy / "run.json").write_text(json.dumps(rec), encoding="utf-8")
    refused = ftc(root, "run", "spec.toml", "--resume", str(copy))
    assert refused.returncode == 1 and f"is still running (process {os.getpid()})" in refused.stderr


def test_refuses_package_drift_unless_allowed(tmp_path, tiny_model):
    spec = write_project(tmp_path, tiny_model)
    pinned = dict(installed_versions(), transformers="4.0.0")  # the lock pins a version that is not installed
    write_build(compile_build(spec, root=tmp_path, packages=pinned))
    refused = ftc(tmp_path, "run", "spec.toml")
    assert refused.returncode == 1
    assert "transformers 4.0.0 in the lock" in refused.stderr and "--allow-version-drift" in refused.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything ran

    # allowed: a warning, and the drift is recorded (stopped at once: the refusal path is what is tested)
    process = ftc(tmp_path, "run", "spec.toml", "--allow-version-drift", "--samples", "0", wait=False)
    run_dir = wait_for_seal(tmp_path, 5, process)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert "warning: version drift: transformers 4.0.0 in the lock" in output
    assert any("transformers 4.0.0 in the lock" in d for d in record(run_dir)["version_drift"])


def test_refuses_a_cuda_plan_without_cuda(tmp_path, tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    write_project(tmp_path, tiny_model, accelerator="cuda")
    assert ftc(tmp_path, "compile", "spec.toml").returncode == 0
    refused = ftc(tmp_path, "run", "spec.toml")
    assert refused.returncode == 1
    assert "the plan needs CUDA" in refused.stderr and "no CUDA device" in refused.stderr
    assert not (tmp_path / "runs").exists()


def test_early_stopping_on_validation_loss(tmp_path, tiny_model):
    """Full fine-tuning at a high learning rate: the validation loss rises at step 8 (measured: 4.33 at step 6,
    4.41 at step 8), and with a patience of 1 the run stops there and keeps the best model."""
    spec = write_project(tmp_path, tiny_model)
    text = spec.read_text(encoding="utf-8")
    method = text[text.index("[method]") : text.index("[training]")]
    text = text.replace(method, '[method]\nkind = "full"\n\n').replace("max_steps = 30\nsave_steps = 5", "max_steps = 20\nsave_steps = 2")
    spec.write_text(text.replace("learning_rate = 2e-4", "learning_rate = 3e-2\nearly_stopping_patience = 1"), encoding="utf-8")
    assert ftc(tmp_path, "compile", "spec.toml").returncode == 0
    result = ftc(tmp_path, "run", "spec.toml", "--samples", "0")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (run_dir,) = runs(tmp_path)
    rec = record(run_dir)
    assert rec["status"] == "completed" and rec["early_stopped"] is True
    assert rec["step"] == 8 and rec["best_checkpoint"] == "checkpoints/checkpoint-6"
    assert "stopped early" in result.stdout
    best = load_file(str(run_dir / "checkpoints" / "checkpoint-6" / "model.safetensors"))
    final = load_file(str(run_dir / "final" / "model.safetensors"))
    assert max_difference(best, final) == 0.0  # final/ is the best model, not the last


def test_the_script_never_imports_a_file_planted_beside_it(tmp_path):
    """A module planted in the build folder is not imported in place of the standard library's: the script runs
    with the safe-path environment `ftc run` gives it (the hash check refuses such a build before that)."""
    from ftc.runtime.run.execute import script_env

    folder = tmp_path / "build" / "x"
    folder.mkdir(parents=True)
    (folder / "argparse.py").write_text("import sys; sys.exit(7)\n", encoding="utf-8")
    (folder / "train.py").write_text("import argparse\nprint(argparse.ArgumentParser.__name__)\n", encoding="utf-8")
    ran = subprocess.run([sys.executable, str(folder / "train.py")], env=script_env(), capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.strip() == "ArgumentParser", ran.stderr
    planted = subprocess.run([sys.executable, str(folder / "train.py")], capture_output=True, text=True)
    assert planted.returncode == 7  # without it, Python puts the script's folder first and runs the planted file
