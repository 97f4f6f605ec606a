"""Two processes on the CPU, launched as `ftc run` launches a plan on several devices: launch.sh, accelerate launch,
torchrun, gloo. Against one process with the same batch (micro batch 4 x accumulation 2 against micro batch 2 x
accumulation 2 x 2 processes), every step's loss and gradient norm must agree, up to the order of float sums.

Tolerance: both runs compute in fp32 on the CPU, over the same 8 packed sequences a step, in the same order. They
differ in how sums are grouped: micro batches of 4 against 2, and gloo's all-reduce of the two halves of the
gradient. Measured over 6 steps (LoRA, learning rate 1e-2): losses differ by at most 8e-8 relatively (one float32
ulp), gradient norms by 2.4e-7. The test allows 1e-5 and 1e-4: a hundred times that, for other CPUs' kernels, and
still ten times below the smallest real fault measured the same way (relative loss / gradient norm difference):
  - each process shuffles the data with its own seed (they train other examples):  8.5e-4 / 7.5e-2
  - each process divides its loss by its own token count, not the batch's:        1.3e-4 / 2.7e-3
  - the gradients are summed across the processes instead of averaged:            9.1e-4 / 1.0
The data hold 24 packed sequences, 3 whole steps of 8: at a partial last step, accelerate's even_batches would repeat
a sequence to give each process as many as the others, which one process does not.

LoRA dropout is 0: each process draws its own dropout masks, which one process would draw differently.
FSDP on the CPU is refused: accelerate shards only across CUDA devices, and its CPU processes would train as DDP.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from safetensors.torch import load_file

from ftc.compiler.build import compile_build, write_build
from ftc.compiler.diagnostics import SpecError

DATA = REPO / "specs" / "data" / "ticket_triage"
MAX_STEPS, SAVE_STEPS = 6, 2
LOSS_RTOL, GRAD_NORM_RTOL = 1e-5, 1e-4  # see the module docstring
SPEC = """
[project]
name = "{name}"
seed = 3

[model]
base = "{model}"

[data]
train = "data/train.jsonl"
format = "chat"
max_length = 512
packing = true

[method]
kind = "lora"
r = 4
lora_alpha = 8
lora_dropout = 0.0
target_modules = "all-linear"

[training]
max_steps = {max_steps}
save_steps = {save_steps}
save_total_limit = 10
learning_rate = 1e-2
warmup_steps = 0
batch_size = 8
micro_batch_size = {micro}
logging_steps = 1
report_to = []

[hardware]
accelerator = "cpu"
{hardware}
"""
PLANS = {
    "one": (4, "gpus = 1"),
    "ddp": (2, 'gpus = 2\nstrategy = "ddp"'),
    "fsdp": (2, 'gpus = 2\nstrategy = "fsdp"'),
}


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def ftc(root: Path, *args: str, wait: bool = True):
    command = [sys.executable, "-m", "ftc.compiler.cli", *args]
    # One thread a process: two test workers share two cores. A port of its own for torchrun's rendezvous.
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MASTER_PORT=_free_port())
    if not wait:
        return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()]


def step_logs(run_dir: Path) -> dict[int, dict]:
    return {e["step"]: e for e in events(run_dir) if e["event"] == "log" and "loss" in e}


def adapter(run_dir: Path) -> dict:
    return load_file(str(run_dir / "final" / "adapter_model.safetensors"))


def runs_of(root: Path, name: str) -> list[Path]:
    return sorted((root / "runs" / name).glob("*"))


def processes_of(run_dir: Path) -> list[int]:
    """The processes still running with this run folder on their command line (the script, or its workers)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(run_dir).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def interrupt_once_training(root: Path, name: str) -> tuple[Path, subprocess.CompletedProcess]:
    """Start `ftc run`, press Ctrl-C as soon as the workers begin training; the run folder and what ftc printed."""
    process = ftc(root, "run", f"{name}.toml", "--samples", "0", wait=False)
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "training did not begin within 300 s"
        fresh = runs_of(root, name)
        if fresh and (fresh[0] / "events.jsonl").is_file() and any(e["event"] == "train_begin" for e in events(fresh[0])):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)  # what Ctrl-C does to ftc
    output = process.communicate(timeout=120)[0]
    return fresh[0], subprocess.CompletedProcess(process.args, process.returncode, output, "")


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model):
    """One project with the three plans; a run of the one-process plan, and one of the DDP plan that is stopped with
    Ctrl-C at its first step and resumed (what the uninterrupted run did, the two sessions together must do)."""
    root = tmp_path_factory.mktemp("distributed")
    (root / "data").mkdir()
    lines = DATA.joinpath("train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "data" / "train.jsonl").write_text("".join(lines[:64]), encoding="utf-8")  # packs into 24 sequences: 3 whole steps
    model = os.path.relpath(tiny_model, root)
    for name, (micro, hardware) in PLANS.items():
        spec = SPEC.format(name=name, model=model, max_steps=MAX_STEPS, save_steps=SAVE_STEPS, micro=micro, hardware=hardware)
        (root / f"{name}.toml").write_text(spec, encoding="utf-8")
        if name != "fsdp":
            write_build(compile_build(root / f"{name}.toml", root=root))
    timings = {}
    started = time.monotonic()
    one = ftc(root, "run", "one.toml", "--samples", "0")
    assert one.returncode == 0, one.stdout[-4000:] + one.stderr[-4000:]
    timings["one process"] = time.monotonic() - started
    started = time.monotonic()
    run_dir, stopped = interrupt_once_training(root, "ddp")
    interrupted = {"returncode": stopped.returncode, "output": stopped.stdout, "record": record(run_dir), "left": processes_of(run_dir)}
    timings["2 processes, stopped"] = time.monotonic() - started
    started = time.monotonic()
    resumed = ftc(root, "run", "ddp.toml", "--resume", str(run_dir), "--samples", "0")
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    timings["2 processes, resumed"] = time.monotonic() - started
    print(", ".join(f"{k}: {v:.0f} s" for k, v in timings.items()))
    return root, interrupted, resumed.stdout


def test_the_plan_launches_two_processes_that_join_over_gloo(project):
    root, _, output = project
    build = root / "build" / "ddp"
    config = (build / "accelerate.yaml").read_text(encoding="utf-8")
    assert "distributed_type: MULTI_GPU" in config and "use_cpu: true" in config  # torchrun starts them; they train on the CPU
    (run_dir,) = runs_of(root, "ddp")
    rec = record(run_dir)
    assert rec["status"] == "completed" and rec["step"] == MAX_STEPS
    assert rec["distributed"] == {"processes": 2, "backend": "gloo", "mode": "MULTI_CPU"}
    assert "distributed: 2 processes, MULTI_CPU over gloo" in output
    assert "distributed" not in record(runs_of(root, "one")[0])


def test_two_processes_train_as_one_with_the_same_batch(project):
    root, _, _ = project
    (one,) = runs_of(root, "one")
    (ddp,) = runs_of(root, "ddp")
    single, double = step_logs(one), step_logs(ddp)  # the DDP run's steps come from its two sessions
    assert sorted(single) == sorted(double) == list(range(1, MAX_STEPS + 1))
    for key, tolerance in (("loss", LOSS_RTOL), ("grad_norm", GRAD_NORM_RTOL)):
        worst = max(abs(double[s][key] - single[s][key]) / abs(single[s][key]) for s in single)
        print(f"2 processes against one, per-step {key}: max relative difference {worst:.2e}")
        assert worst <= tolerance, {s: (single[s][key], double[s][key]) for s in single}
    assert single[MAX_STEPS]["loss"] < single[1]["loss"] - 0.1  # it learned: the comparison is not between two untrained models
    a, b = adapter(one), adapter(ddp)
    assert a.keys() == b.keys()
    weights = max(((a[k] - b[k]).abs().max() / a[k].abs().max()).item() for k in a)
    print(f"final adapter: max difference relative to each tensor's largest weight {weights:.2e}")
    assert weights <= 1e-3


def test_ctrl_c_stops_every_process_with_a_checkpoint(project):
    root, interrupted, resumed = project
    assert interrupted["returncode"] == 130, interrupted["output"][-4000:]
    rec = interrupted["record"]
    stopped = rec["step"]
    assert rec["status"] == "interrupted" and rec["exit_code"] == 130 and 1 <= stopped < MAX_STEPS, interrupted["output"][-3000:]
    assert rec["last_checkpoint"] == f"checkpoints/checkpoint-{stopped}"
    assert interrupted["left"] == [], "worker processes outlived the run"
    assert f"resuming from checkpoint-{stopped}" in resumed
    (run_dir,) = runs_of(root, "ddp")
    assert [s["status"] for s in record(run_dir)["sessions"]] == ["interrupted", "completed"]


def test_only_rank_zero_writes_the_run_files(project, tiny_model):
    root, interrupted, resumed = project
    (run_dir,) = runs_of(root, "ddp")
    kinds = [e["event"] for e in events(run_dir)]
    assert kinds.count("start") == kinds.count("train_begin") == kinds.count("end") == 2  # one a session
    assert kinds.count("step") == MAX_STEPS
    saved = [e["step"] for e in events(run_dir) if e["event"] == "checkpoint"]
    assert sorted(saved) == sorted({*range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS), interrupted["record"]["step"]})
    assert resumed.count("saved ") == 1
    for step in saved:
        folder = run_dir / "checkpoints" / f"checkpoint-{step}"
        sealed = json.loads((folder / "ftc-checkpoint.json").read_text(encoding="utf-8"))["files"]
        # the seal waits for every process: each one's RNG state is in it, next to the one copy of the weights
        assert {"rng_state_0.pth", "rng_state_1.pth", "adapter_model.safetensors", "optimizer.pt"} <= set(sealed)
    # the final adapter is whole (every tensor at its full shape) and loads onto the base model
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    one = adapter(runs_of(root, "one")[0])
    assert {k: v.shape for k, v in adapter(run_dir).items()} == {k: v.shape for k, v in one.items()}
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run_dir / "final")
    assert sum(p.numel() for n, p in tuned.named_parameters() if "lora_" in n) == sum(v.numel() for v in one.values())
    assert (run_dir / "final" / "chat_template.jinja").is_file()


def test_fsdp_on_the_cpu_is_refused_before_it_starts(project):
    root, _, _ = project
    # accelerator = "cpu": refused as the spec is checked
    with pytest.raises(SpecError, match="FSDP shards only across CUDA devices"):
        compile_build(root / "fsdp.toml", root=root)
    # accelerator = "auto" compiles (it may meet CUDA), and `ftc run` refuses it on a CPU before any process starts
    import torch

    if torch.cuda.is_available():
        return
    spec = (root / "fsdp.toml").read_text(encoding="utf-8").replace('accelerator = "cpu"', 'accelerator = "auto"')
    (root / "fsdp.toml").write_text(spec, encoding="utf-8")
    write_build(compile_build(root / "fsdp.toml", root=root))
    result = ftc(root, "run", "fsdp.toml", "--samples", "0")
    assert result.returncode != 0
    assert "FSDP" in result.stderr and 'hardware.strategy = "ddp"' in result.stderr, result.stderr
    assert runs_of(root, "fsdp") == []


def test_the_script_refuses_a_launch_with_another_number_of_processes(monkeypatch, capsys):
    from ftc.templates.run_support import check_processes

    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(SystemExit):
        check_processes(2, "ddp", "cpu")
    assert "launch.sh" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_processes(2, "ddp", "cpu")
    with pytest.raises(SystemExit):
        check_processes(2, "fsdp", "cpu")


def test_ctrl_c_goes_to_the_workers_not_the_launcher(tmp_path):
    """ftc signals torchrun's workers directly: torchrun itself would SIGKILL a worker still saving 30 s later."""
    from ftc.runtime.run import _process_tree, _workers

    script = tmp_path / "train.py"
    script.write_text("import time\ntime.sleep(60)\n", encoding="utf-8")
    sleeper = "import sys, time; time.sleep(60)"
    launcher = subprocess.Popen(["bash", "-c", f'"{sys.executable}" "{script}" & "{sys.executable}" -c "{sleeper}" "{script}" accelerate & wait'])
    try:
        deadline = time.monotonic() + 30
        while len(_process_tree(launcher.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        tree = _process_tree(launcher.pid)
        workers = _workers(tree, script)
        assert len(tree) == 2 and len(workers) == 1  # the script's process; not the one that only names it
        assert Path(f"/proc/{next(iter(workers))}/cmdline").read_bytes().split(b"\0")[1] == str(script).encode()
    finally:
        for pid in _process_tree(launcher.pid):
            os.kill(pid, signal.SIGKILL)
        launcher.kill()
        launcher.wait()
