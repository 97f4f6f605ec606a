"""A small project for the crash matrix (test_hostile_crash.py): the tiny random Llama, LoRA, 6 steps with a
checkpoint every 2, data cleaned by the compiler (so the build holds a cleaned copy), and the helpers that start
a command as a real process, watch the run folder for the phase to kill in, and SIGKILL it.

"kill -9 at a phase" kills ftc and the training script it started together, as a power cut or the OOM killer
would: nothing gets to record how it ended."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "specs" / "data" / "ticket_triage"
MAX_STEPS, SAVE_STEPS = 4, 2
SPEC = """
[project]
name = "crash"
seed = 3

[model]
base = "{model}"

[data]
train = "data/train.jsonl"
validation = "data/val.jsonl"
format = "chat"
max_length = 1024
packing = false
dedup = "exact"                # the build trains on its own cleaned copy: data/train.jsonl

[method]
kind = "lora"
r = 4
lora_alpha = 8
target_modules = "all-linear"

[training]
max_steps = {max_steps}
save_steps = {save_steps}
save_total_limit = 10          # every sealed checkpoint stays: none may be lost
learning_rate = 1e-2
batch_size = 4
micro_batch_size = 4
logging_steps = 1
report_to = []

[evaluation]
max_examples = 2
max_new_tokens = 8

[hardware]
accelerator = "cpu"
"""


def write_project(root: Path, tiny_model: Path, train_lines: list[str] | None = None) -> Path:
    """The project's spec and data under `root` (`train_lines`: the training file, else 12 real examples)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    lines = train_lines or DATA.joinpath("train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:12]
    (root / "data" / "train.jsonl").write_text("".join(lines), encoding="utf-8")
    val = DATA.joinpath("val.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "data" / "val.jsonl").write_text("".join(val[:4]), encoding="utf-8")
    spec = root / "spec.toml"
    model = os.path.relpath(tiny_model, root)
    spec.write_text(SPEC.format(model=model, max_steps=MAX_STEPS, save_steps=SAVE_STEPS), encoding="utf-8")
    return spec


def env() -> dict[str, str]:
    # one thread: two test workers share two cores, and waiting OpenMP threads make the tiny model crawl
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def start(root: Path, *args: str) -> subprocess.Popen:
    """`ftc ARGS` as a real process in its own session (so that the test can kill it and all it started)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ftc.cli", *args], cwd=root, env=env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def descendants(pid: int) -> list[int]:
    """Every process started under `pid`, read from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found += children
        frontier += children
    return found


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300, poll: float = 0.001) -> None:
    """SIGKILL `process` and every process under it as soon as `ready()` holds (checked every `poll` seconds)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the command ended (exit {process.returncode}) before the phase:\n{process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the phase was not reached within {timeout} s")
        time.sleep(poll)
    tree = descendants(process.pid)
    os.kill(process.pid, signal.SIGKILL)  # ftc first: it must not get to record anything
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=60)
    process.stdout.close()
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.01)  # SIGKILL takes effect a moment later, and init reaps what it leaves


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def sealed(run_dir: Path) -> dict[str, str]:
    """checkpoint name -> its seal's text, for every sealed checkpoint."""
    return {
        p.parent.name: p.read_text(encoding="utf-8")
        for p in sorted((run_dir / "checkpoints").glob("checkpoint-*/ftc-checkpoint.json"))
    }


def only_run(root: Path) -> Path:
    (run_dir,) = [p for p in (root / "runs" / "crash").iterdir() if (p / "run.json").is_file()]
    return run_dir
