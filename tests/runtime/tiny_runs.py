"""Real run folders for the runtime tests, trained once per test session on the tiny random Llama: a spec is
compiled into a temporary project, its train.py runs as `ftc run` runs it (a child process, 2 steps), and
the run folder gets the run.json and lock copy that `ftc run` writes.

A helper module rather than a conftest.py, so that `from conftest import ...` keeps meaning tests/conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ftc.compiler.build.compile import compile_build, write_build
from ftc.compiler.build.lock import LOCK_NAME

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "specs" / "data" / "ticket_triage"

# A learning rate high enough that 2 steps move the adapter well away from zero: merging then matters.
METHODS = {
    "lora": 'kind = "lora"\nr = 4\nlora_alpha = 8\ntarget_modules = "all-linear"',
    "qlora": 'kind = "qlora"\nr = 4\nlora_alpha = 8\ntarget_modules = "all-linear"',
    "full": 'kind = "full"',
}


def train_run(project: Path, tiny_model: Path, method: str) -> Path:
    """Compile and train a 2-step run of `method` in `project`; returns runs/<name>/test."""
    (project / "data").mkdir(parents=True)
    train = (
        DATA.joinpath("train.jsonl")
        .read_text(encoding="utf-8")
        .splitlines(keepends=True)
    )
    val = (
        DATA.joinpath("val.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    )
    (project / "data" / "train.jsonl").write_text("".join(train[:8]), encoding="utf-8")
    (project / "data" / "val.jsonl").write_text("".join(val[:4]), encoding="utf-8")
    spec = project / "spec.toml"
    spec.write_text(
        f"""
[project]
name = "tiny-{method}"
seed = 3

[model]
base = "{os.path.relpath(tiny_model, project)}"

[data]
train = "data/train.jsonl"
validation = "data/val.jsonl"
format = "chat"
max_length = 1024
packing = false

[method]
{METHODS[method]}

[training]
max_steps = 2
learning_rate = {"1e-4" if method == "full" else "1e-2"}
batch_size = 4
micro_batch_size = 4
report_to = []

[hardware]
accelerator = "cpu"
""",
        encoding="utf-8",
    )
    build = compile_build(spec, root=project)
    write_build(build)
    run_dir = project / "runs" / build.name / "test"
    result = subprocess.run(
        [
            sys.executable,
            str(build.directory / "train.py"),
            "--output-dir",
            str(run_dir),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        # One thread: `make test` runs two workers on two cores, and OpenMP threads that wait for a busy core
        # make a tiny model's matrix products a thousand times slower.
        env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.copy2(build.directory / LOCK_NAME, run_dir / LOCK_NAME)
    (run_dir / "run.json").write_text(
        json.dumps({"root": str(project), "status": "completed"}) + "\n",
        encoding="utf-8",
    )
    return run_dir


_TRAINED: dict[str, Path] = {}


def trained_run(tmp_path_factory, tiny_model: Path, method: str) -> Path:
    """The run folder of a 2-step run of `method`, trained on first use in this test session."""
    if method not in _TRAINED:
        _TRAINED[method] = train_run(
            tmp_path_factory.mktemp(f"project-{method}"), tiny_model, method
        )
    return _TRAINED[method]
