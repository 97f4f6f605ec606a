"""The peft methods beyond LoRA, trained for real on the tiny random Llama (2 steps each): IA3, AdaLoRA, VeRA,
prompt tuning, P-tuning and prefix tuning. Each run is scored base against tuned; the adapters that change
weights merge with the logit verification, the others are refused with the reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file
from tiny_runs import trained_run

from ftc.runtime.evaluate.compare import evaluate_run
from ftc.runtime.merge import MergeFailed, merge_run

MERGING = ("ia3", "adalora", "vera")
VIRTUAL_TOKENS = ("prompt_tuning", "p_tuning", "prefix_tuning")
EVALUATION = '\n[evaluation]\nmetrics = ["exact_match", "rouge_l"]\nmax_new_tokens = 6\nmax_examples = 2\n'


@pytest.fixture(scope="module", params=MERGING + VIRTUAL_TOKENS)
def run(request, tmp_path_factory, tiny_model):
    return request.param, trained_run(tmp_path_factory, tiny_model, request.param, EVALUATION)


def test_the_run_saves_the_methods_adapter_and_the_lock_counts_what_peft_trained(run):
    kind, run_dir = run
    config = json.loads((run_dir / "final" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["peft_type"] == {"p_tuning": "P_TUNING", "prefix_tuning": "PREFIX_TUNING"}.get(kind, kind.upper())
    lock = json.loads((run_dir / "ftc.lock.json").read_text(encoding="utf-8"))
    trained = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    if kind in ("prompt_tuning", "ia3"):  # the file holds exactly the trained tensors
        assert sum(t.numel() for t in trained.values()) == lock["method"]["trainable_params"]
    assert 0 < lock["method"]["trainable_params"] < lock["method"]["total_params"] / 10


def test_the_training_log_holds_no_library_warning(run):
    _, run_dir = run  # e.g. prefix tuning's `past_key_values` FutureWarning at every forward pass, filtered by name
    log = (run_dir / "train.log").read_text(encoding="utf-8")  # the script's output
    assert "Warning" not in log and "warn(" not in log, log[-3000:]


def test_eval_scores_base_against_tuned(run):
    kind, run_dir = run
    record = evaluate_run(run_dir).record
    scores = record.model_dump()["metrics"]["rouge_l"]
    assert scores["base"] is not None and scores["tuned"] is not None
    answers = record.model_dump()["answers"]
    assert len(answers) == 2 and all(a["tuned_tokens"] <= 6 for a in answers)
    assert ("attached (virtual tokens" in record.models.tuned) == (kind in VIRTUAL_TOKENS)


def test_merge_verifies_weight_adapters_and_refuses_virtual_tokens(run):
    kind, run_dir = run
    if kind in MERGING:
        result = merge_run(run_dir, examples=2)
        assert result.verification.passed and result.record.status == "verified"
        assert result.verification.max_abs_logit_diff < 1e-4
        assert not (result.path / "adapter_config.json").exists()
    else:
        with pytest.raises(MergeFailed, match="learns virtual tokens, not changes to the base's weights"):
            merge_run(run_dir)
        assert not (run_dir / "merged").exists()


def test_adalora_reallocates_ranks_during_training(tmp_path_factory, tiny_model):
    """peft's update_and_allocate runs after every optimizer step: by the last step the budget is below init_r."""
    run_dir = trained_run(tmp_path_factory, tiny_model, "adalora", EVALUATION)
    config = json.loads((run_dir / "final" / "adapter_config.json").read_text(encoding="utf-8"))
    pattern = config["rank_pattern"]
    assert pattern, "no rank was ever reallocated"
    kept = [sum(mask) for mask in pattern.values()]
    assert len(kept) == 14 and sum(kept) < 6 * len(kept) and all(k <= 6 for k in kept)


def test_adalora_resumed_equals_uninterrupted(tmp_path, tiny_model):
    """The rank allocator's running scores go into every checkpoint: resuming from step 2 of 4 ends where an
    uninterrupted run ends, bit for bit (without them the reallocation after the resume differs)."""
    import tiny_runs

    project = tmp_path / "project"
    whole = tiny_runs.train_run(project, tiny_model, "adalora", training="save_steps = 1")  # 2 steps, saved at each
    script = next((project / "build").glob("*/train.py"))
    lock = json.loads((whole / "ftc.lock.json").read_text(encoding="utf-8"))
    assert lock["training"]["save_steps"] == 1 and lock["training"]["max_steps"] == 2
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(whole / "checkpoints" / "checkpoint-1", resumed / "checkpoints" / "checkpoint-1")
    assert (resumed / "checkpoints" / "checkpoint-1" / "adalora_budget.safetensors").is_file()
    result = subprocess.run(
        [sys.executable, str(script), "--output-dir", str(resumed), "--resume", "--no-progress-bar"],
        capture_output=True, text=True, timeout=600, env=tiny_runs.child_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoint-1" in result.stdout
    one = load_file(str(whole / "final" / "adapter_model.safetensors"))
    two = load_file(str(resumed / "final" / "adapter_model.safetensors"))
    assert one.keys() == two.keys() and all((one[k] == two[k]).all() for k in one)
    assert json.loads((whole / "final" / "adapter_config.json").read_text())["rank_pattern"] == json.loads(
        (resumed / "final" / "adapter_config.json").read_text()
    )["rank_pattern"]


def test_an_adalora_schedule_with_no_steps_between_warmup_and_final_is_refused_at_compile(tmp_path, tiny_model, monkeypatch):
    """peft needs total_step - tinit - tfinal > 0; total_step is the plan's max_steps, known once the data is
    measured, so the refusal comes from `ftc compile`, at the spec's line."""
    import tiny_runs

    from ftc.compiler.diagnostics import SpecError

    monkeypatch.setitem(tiny_runs.METHODS, "adalora", tiny_runs.METHODS["adalora"] + "\ntinit = 1\ntfinal = 1")
    with pytest.raises(SpecError) as refused:
        tiny_runs.train_run(tmp_path, tiny_model, "adalora")
    [problem] = [d for d in refused.value.diagnostics if d.is_error]
    assert problem.key == "method.tinit" and problem.line == 22  # the line of tinit = 1
    assert "tinit 1 + tfinal 1 leave none of the run's 2 steps" in problem.message
    assert not (tmp_path / "runs").exists()
