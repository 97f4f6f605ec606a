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
    "ia3": 'kind = "ia3"\ntarget_modules = "all-linear"\nfeedforward_modules = ["down_proj"]',
    "adalora": 'kind = "adalora"\ninit_r = 6\ntarget_r = 3\nlora_alpha = 8\ntarget_modules = "all-linear"',
    "vera": 'kind = "vera"\nr = 16\ntarget_modules = ["q_proj", "v_proj"]',
    "prompt_tuning": 'kind = "prompt_tuning"\nnum_virtual_tokens = 4',
    "p_tuning": 'kind = "p_tuning"\nnum_virtual_tokens = 4\nencoder_hidden_size = 32',
    "prefix_tuning": 'kind = "prefix_tuning"\nnum_virtual_tokens = 4',
}
# Rates that move each method's few parameters well away from their start in 2 steps (each method's usual rate
# is higher than LoRA's; these are the top of the usual ranges or above).
LEARNING_RATES = {"full": "1e-4", "ia3": "5e-2", "vera": "5e-2", "prompt_tuning": "3e-1", "p_tuning": "1e-2", "prefix_tuning": "3e-2"}


def child_env() -> dict[str, str]:
    """The environment of a training process in the tests. One thread: `make test` runs two workers on two cores,
    and OpenMP threads that wait for a busy core make a tiny model's matrix products a thousand times slower."""
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def train_run(project: Path, tiny_model: Path, method: str, extra: str = "", training: str = "") -> Path:
    """Compile and train a 2-step run of `method` in `project` (with `extra` TOML appended to its spec and
    `training` lines added to its [training] table); returns runs/<name>/test."""
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
learning_rate = {LEARNING_RATES.get(method, "1e-2")}
batch_size = 4
micro_batch_size = 4
report_to = []
{training}
[hardware]
accelerator = "cpu"
{extra}""",
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
        env=child_env(),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.copy2(build.directory / LOCK_NAME, run_dir / LOCK_NAME)
    (run_dir / "train.log").write_text(result.stdout + result.stderr, encoding="utf-8")  # as `ftc run` keeps it
    (run_dir / "run.json").write_text(
        json.dumps({"root": str(project), "status": "completed"}) + "\n",
        encoding="utf-8",
    )
    return run_dir


_TRAINED: dict[tuple[str, str], Path] = {}


def trained_run(tmp_path_factory, tiny_model: Path, method: str, extra: str = "") -> Path:
    """The run folder of a 2-step run of `method` (spec + `extra`), trained on first use in this test session."""
    if (method, extra) not in _TRAINED:
        _TRAINED[method, extra] = train_run(tmp_path_factory.mktemp(f"project-{method}"), tiny_model, method, extra)
    return _TRAINED[method, extra]
