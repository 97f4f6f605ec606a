"""A reward model, GRPO and RLOO train for real: 2 steps of the tiny random Llama on the CPU, through the generated
script as `ftc run` runs it. The reward model's final/ is a whole sequence classifier that a GRPO spec then loads
as a reward; GRPO and RLOO log every declared reward, the total, and the completions' length; `ftc eval` scores
the reward model's held-out pairs and the policy's held-out answers."""

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
from ftc.compiler.build.stale import check_hashes

DATA = REPO / "specs" / "data"
REWARDS = """
[[method.rewards]]
kind = "json_valid"

[[method.rewards]]
kind = "label_match"
key = "category"
weight = 2.0

[[method.rewards]]
kind = "length"
target = 8
weight = 0.5
"""
# case -> (the [method] table, the data folder, the [data] format, the learning rate)
CASES = {
    "reward-lora": ('kind = "reward"\nr = 4\nlora_alpha = 8\ntarget_modules = "all-linear"', "ticket_triage_prefs", "preference", "1e-3"),
    "grpo-lora": ('kind = "grpo"\nnum_generations = 2\nmax_completion_length = 8\nr = 4\nlora_alpha = 8' + REWARDS, "ticket_triage", "chat", "1e-3"),
    "rloo-full": ('kind = "rloo"\nadapter = "none"\nnum_generations = 2\nmax_completion_length = 8\nbeta = 0.05' + REWARDS, "ticket_triage", "chat", "1e-4"),
}
_RUNS: dict[str, Path] = {}


def _train(project: Path, tiny_model: Path, case: str, method: str | None = None) -> Path:
    table, folder, fmt, learning_rate = CASES[case]
    (project / "data").mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 8), ("val", 4)):
        kept = (DATA / folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
        (project / "data" / f"{split}.jsonl").write_text("".join(kept), encoding="utf-8")
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
{method or table}

[training]
max_steps = 2
learning_rate = {learning_rate}
batch_size = 4
micro_batch_size = 2
logging_steps = 1
save_steps = 1
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
        [sys.executable, "-P", str(build.directory / "train.py"), "--output-dir", str(run_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"),  # see tests/runtime/tiny_runs.py
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir / "train.log").write_text(result.stdout + result.stderr, encoding="utf-8")
    (run_dir / LOCK_NAME).write_bytes((build.directory / LOCK_NAME).read_bytes())
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


def _logged(run_dir: Path) -> list[dict]:
    last = max((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    return [entry for entry in state["log_history"] if "loss" in entry]


def test_a_reward_model_saves_a_whole_sequence_classifier(trained):
    run_dir = trained("reward-lora")
    saved = {p.name for p in (run_dir / "final").iterdir()}
    assert "model.safetensors" in saved and "adapter_config.json" not in saved, saved  # the adapter is folded in
    config = json.loads((run_dir / "final" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config.get("num_labels", 1) == 1
    assert config["pad_token_id"] is not None  # the score is read at the last real token
    assert "LOAD REPORT" not in (run_dir / "train.log").read_text()  # the new score head is expected: no notice
    logged = _logged(run_dir)
    assert len(logged) == 2 and all(math.isfinite(e["loss"]) and 0 <= e["accuracy"] <= 1 for e in logged), logged


@pytest.mark.parametrize("case", ["grpo-lora", "rloo-full"])
def test_a_policy_logs_every_reward_the_total_and_the_length(case, trained):
    run_dir = trained(case)
    logged = _logged(run_dir)
    assert len(logged) == 2
    for entry in logged:
        for name in ("json_valid", "label_match_category", "length"):
            assert math.isfinite(entry[f"rewards/{name}/mean"]), entry
        assert math.isfinite(entry["reward"]) and 0 < entry["completions/mean_length"] <= 8
        weighted = entry["rewards/json_valid/mean"] + 2 * entry["rewards/label_match_category/mean"] + 0.5 * entry["rewards/length/mean"]
        assert entry["reward"] == pytest.approx(weighted, abs=1e-5)  # trl sums them with the spec's weights
    if case == "rloo-full":
        assert all(math.isfinite(e["kl"]) for e in logged)  # beta > 0: the reference model ran
    saved = {p.name for p in (run_dir / "final").iterdir()}
    assert ("adapter_config.json" in saved) == (case == "grpo-lora"), saved
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert any("rewards/label_match_category/mean" in e for e in events if e["event"] == "log")


def test_grpo_trains_against_a_reward_model_run_and_locks_it(trained, tmp_path, tiny_model):
    reward_run = trained("reward-lora")
    project = tmp_path / "policy"
    project.mkdir()
    folder = os.path.relpath(reward_run / "final", project)
    table = f'kind = "grpo"\nnum_generations = 2\nmax_completion_length = 8\nr = 4\nlora_alpha = 8\n\n[[method.rewards]]\nkind = "reward_model"\npath = "{folder}"'
    run_dir = _train(project, tiny_model, "grpo-lora", table)
    lock = json.loads((run_dir / LOCK_NAME).read_text())
    assert set(lock["inputs"]["reward_models"]) == {"reward_model"}
    assert "model.safetensors" in lock["inputs"]["reward_models"]["reward_model"]["files"]
    assert all(math.isfinite(e["rewards/reward_model/mean"]) for e in _logged(run_dir))
    # a reward model that changes after compile makes the policy's build stale
    weights = reward_run / "final" / "model.safetensors"
    kept = weights.read_bytes()
    try:
        weights.write_bytes(kept[:-1] + bytes([kept[-1] ^ 1]))
        reasons = check_hashes(project / "spec.toml", root=project).reasons(allow_package_drift=True)
    finally:
        weights.write_bytes(kept)
    assert any(r.startswith("reward model changed") and "model.safetensors" in r for r in reasons), reasons


def test_the_policy_is_evaluated_on_its_held_out_answers(trained, capsys):
    run_dir = trained("grpo-lora")
    assert main(["eval", str(run_dir), "--max-examples", "2"]) == 0, capsys.readouterr().err
    record = json.loads((run_dir / "eval.json").read_text())
    assert record["examples"] == 2 and {"base", "tuned"} <= set(record["metrics"]["json_valid"])


def test_the_reward_model_is_evaluated_on_held_out_pairs(trained, capsys):
    run_dir = trained("reward-lora")
    assert main(["eval", str(run_dir)]) == 0, capsys.readouterr().err
    record = json.loads((run_dir / "eval.json").read_text())
    assert record["examples"] == 4  # the 4 held-out pairs
    accuracy, margin = record["metrics"]["pairwise_accuracy"], record["metrics"]["mean_margin"]
    assert {"base", "tuned"} <= set(accuracy) and all(0 <= accuracy[k] <= 1 and accuracy[k] * 4 == round(accuracy[k] * 4) for k in ("base", "tuned"))
    assert math.isfinite(margin["tuned"]) and margin["tuned"] != margin["base"]  # the head trained
    printed = capsys.readouterr().out
    assert "pairwise_accuracy" in printed


def test_a_resumed_policy_run_ends_where_an_uninterrupted_one_does(trained, tmp_path):
    run_dir = trained("grpo-lora")
    project = Path(json.loads((run_dir / "run.json").read_text())["root"])
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(run_dir / "checkpoints" / "checkpoint-1", resumed / "checkpoints" / "checkpoint-1")
    result = subprocess.run(
        [sys.executable, "-P", str(project / "build" / "tiny-grpo-lora" / "train.py"), "--output-dir", str(resumed), "--resume"],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resuming from checkpoint-1" in result.stdout
    uninterrupted = (run_dir / "final" / "adapter_model.safetensors").read_bytes()
    assert (resumed / "final" / "adapter_model.safetensors").read_bytes() == uninterrupted


def test_the_progress_line_shows_each_reward_the_kl_and_the_length():
    from ftc.runtime.run.progress import rl_stats

    event = {"event": "log", "step": 3, "loss": 0.01, "reward": 1.5, "rewards/json_valid/mean": 1.0, "rewards/json_valid/std": 0.0,
             "rewards/label_match_category/mean": 0.5, "kl": 0.002, "completions/mean_length": 31.0}
    assert rl_stats(event) == {"reward": 1.5, "kl": 0.002, "json_valid": 1.0, "label_match_category": 0.5, "completion_length": 31.0}
    assert rl_stats({"event": "log", "loss": 0.4}) == {}  # supervised runs log no reward


def test_the_report_draws_the_rewards_by_step(trained):
    from ftc.runtime.report.page import write_report

    run_dir = trained("grpo-lora")
    events = run_dir / "events.jsonl"  # the test ran the script directly: its events are the run's own
    assert events.is_file()
    path, _ = write_report(run_dir)
    page = path.read_text(encoding="utf-8")
    assert '<section id="rewards"><h2>Rewards</h2>' in page and "label_match_category" in page and "completion_length" in page
