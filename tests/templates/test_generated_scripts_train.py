"""The generated scripts train for real: every method family, on the tiny random Llama, on the CPU.

Each case compiles a spec into a temporary project, runs build/<name>/train.py as `ftc run` would
(a child process), and checks what it saved and that its losses are finite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from ftc.compiler.build.compile import compile_build, write_build

DATA = REPO / "specs" / "data"

METHODS = {
    "full": ('kind = "full"', "chat", True),
    "lora": ('kind = "lora"\nr = 4\nlora_alpha = 8\ntarget_modules = "all-linear"', "chat", True),
    "lora-completion-nopack": ('kind = "lora"\nr = 4\nlora_alpha = 8', "completion", False),
    # drops its longest examples: the script must drop exactly the lines the lock lists
    "lora-drop-overlong": ('kind = "lora"\nr = 4\nlora_alpha = 8', "chat", True, 'max_length = 200\noverlong = "drop"'),
    "qlora": ('kind = "qlora"\nr = 4\nlora_alpha = 8\ntarget_modules = ["q_proj", "v_proj"]', "chat", True),
    "dpo-lora": ('kind = "dpo"\nr = 4\nlora_alpha = 8', "preference", False),
    "dpo-full": ('kind = "dpo"\nadapter = "none"', "preference", False),
    "dpo-full-reference": ('kind = "dpo"\nadapter = "none"\nreference = "{model}"', "preference", False),
}


def _project(tmp: Path, tiny_model: Path, name: str, method: str, fmt: str, packing: bool, length: str = "max_length = 1024") -> Path:
    (tmp / "data").mkdir()
    source = {
        "chat": (DATA / "ticket_triage" / "train.jsonl", DATA / "ticket_triage" / "val.jsonl"),
        "completion": (DATA / "ticket_triage" / "prompt_completion.jsonl", DATA / "ticket_triage" / "prompt_completion.jsonl"),
        "preference": (DATA / "ticket_triage_prefs" / "train.jsonl", DATA / "ticket_triage_prefs" / "val.jsonl"),
    }[fmt]
    lines = source[0].read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp / "data" / "train.jsonl").write_text("".join(lines[:24]), encoding="utf-8")
    val = source[1].read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp / "data" / "val.jsonl").write_text("".join(val[-6:]), encoding="utf-8")
    model = os.path.relpath(tiny_model, tmp)
    spec = tmp / "spec.toml"
    spec.write_text(
        f"""
[project]
name = "{name}"
seed = 3

[model]
base = "{model}"

[data]
train = "data/train.jsonl"
validation = "data/val.jsonl"
format = "{fmt}"
{length}
{"" if fmt == "preference" else f"packing = {str(packing).lower()}"}

[method]
{method.replace("{model}", model)}

[training]
max_steps = 2
learning_rate = {"1e-4" if "full" in name else "2e-4"}
batch_size = 4
micro_batch_size = 2
logging_steps = 1
report_to = ["tensorboard"]

[hardware]
accelerator = "cpu"
""",
        encoding="utf-8",
    )
    return spec


@pytest.mark.parametrize("case", sorted(METHODS))
def test_generated_script_trains(case, tmp_path, tiny_model, monkeypatch):
    _project(tmp_path, tiny_model, f"tiny-{case}", *METHODS[case])
    monkeypatch.chdir(tmp_path)
    build = compile_build(Path("spec.toml"), root=tmp_path)
    write_build(build)
    run_dir = tmp_path / "runs" / build.name / "test"
    result = subprocess.run(
        [sys.executable, str(build.directory / "train.py"), "--output-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = run_dir / "final"
    saved = {p.name for p in final.iterdir()}
    adapter = build.lock.method.adapter == "lora"
    assert ("adapter_model.safetensors" if adapter else "model.safetensors") in saved, saved
    assert "chat_template.jinja" in saved or "tokenizer_config.json" in saved
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "no checkpoint was written"
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    assert state["global_step"] == build.lock.training.max_steps
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert losses and all(math.isfinite(x) for x in losses)
    assert list((run_dir / "logs").rglob("events.out.tfevents.*")), "no TensorBoard log"
    if case == "lora-drop-overlong":
        dropped = build.lock.data.splits["train"].dropped_lines
        assert 0 < len(dropped) < 24, dropped
