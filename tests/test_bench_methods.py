"""bench/methods.py's pure parts: the specs it writes validate, each at the registry's rate; the win rule; the
tokens-per-second reading; the table. The benchmark itself trains SmolLM2 and is run by hand."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from ftc.compiler.diagnostics import errors
from ftc.compiler.methods import METHODS
from ftc.compiler.spec.checks import validate

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_methods", REPO / "bench" / "methods.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_methods"] = bench
_spec.loader.exec_module(bench)

QUICKSTART = tomllib.loads(bench.QUICKSTART.read_text(encoding="utf-8"))
SETTINGS = {"steps": 20, "batch_size": 8, "micro_batch_size": 8, "seed": 42}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench-methods")
    for name in ("ticket_triage", "ticket_triage_prefs", "ticket_triage_kto"):
        shutil.copytree(bench.DATA / name, root / "data" / name)
    return root


@pytest.mark.parametrize("kind", bench.SFT_METHODS + bench.PREFERENCE_METHODS)
def test_every_spec_validates_at_the_registrys_rate(kind, project):
    base = None if kind in bench.SFT_METHODS else QUICKSTART["model"]["base"]
    text, table, lr = bench.spec_for(kind, QUICKSTART, SETTINGS, base)
    path = project / f"{kind}.toml"
    path.write_text(text, encoding="utf-8")
    loaded, diagnostics, _ = validate(path)
    assert loaded is not None and not errors(diagnostics), [d.headline() for d in diagnostics]
    spec = loaded.spec
    assert spec.training.learning_rate == lr == METHODS[kind].learning_rate(spec.method)
    assert (spec.training.max_steps, spec.training.batch_size, spec.project.seed) == (20, 8, 42)
    targets = QUICKSTART["method"]["target_modules"]
    if kind in ("lora", "qlora", "adalora") or kind in bench.PREFERENCE_METHODS:
        assert spec.method.target_modules == targets
    else:  # every other table is the kind's defaults
        assert table == {"kind": kind}
    assert spec.evaluation.compare_base == (kind == "lora" or kind in bench.PREFERENCE_METHODS)


def test_an_unregistered_kind_has_no_rate_and_is_reported_not_raised():
    assert bench.learning_rate({"kind": "adapter"}) is None
    result = {"method": "adapter", "phases": {"compile": {"status": "error", "reason": "unknown method kind 'adapter'"}}}
    table = bench.sft_table([result])
    assert "| adapter | error [1] |" in table and "- [1] unknown method kind 'adapter'" in table


def test_win_tie_and_loss_against_the_sft_model():
    chosen, rejected = '{"category": "account", "priority": "high"}', '{"category": "billing", "priority": "high"}'
    pairs = {"ticket a": (chosen, rejected), "ticket b": (chosen, rejected), "ticket c": (chosen, rejected)}
    answers = [
        {"prompt": "ticket a", "tuned": chosen, "base": rejected},  # win
        {"prompt": "ticket b", "tuned": rejected, "base": chosen},  # loss
        {"prompt": "ticket c", "tuned": chosen, "base": chosen},  # tie: both prefer chosen
        {"prompt": "not held out", "tuned": chosen, "base": rejected},
    ]
    assert bench.win_rate(answers, pairs) == {"wins": 1, "ties": 1, "losses": 1, "unmatched": 1}


def test_real_tokens_per_second_leaves_the_first_step_out():
    events = [{"event": "train_begin", "time": 0.0, "tokens": 0}, {"event": "step", "time": 50.0, "tokens": 700},
              {"event": "log", "time": 50.0}, {"event": "step", "time": 52.0, "tokens": 900},
              {"event": "step", "time": 54.0, "tokens": 1300}]
    assert bench.real_tokens_per_second(events) == 600 / 4
    assert bench.real_tokens_per_second(events[:2]) is None


def test_the_table_shows_merge_numbers_and_refusals_in_ftcs_words():
    compile_ = {"status": "ok", "learning_rate": 0.03, "trainable_params": 11520, "total_params": 134526528, "settings": {"num_virtual_tokens": 20}}
    run = {"status": "ok", "tokens_per_second": 95.4, "peak_memory_gib": 3.1, "train_loss": 1.234, "eval_loss": 1.1, "seconds": 300}
    refused = "ftc merge: runs/x cannot be merged: prompt tuning learns virtual tokens"
    results = [
        {"method": "prompt_tuning", "phases": {"compile": compile_, "run": run, "eval": {"json_valid": 0.5, "accuracy": 0.25, "rouge_l": 0.4567, "examples": 20},
                                               "merge": {"status": "refused", "reason": refused},
                                               "serve": {"status": "passed", "agreeing": 4, "prompts": 4, "mode": "prompt_embeds"}}},
        {"method": "lora", "phases": {"compile": {**compile_, "learning_rate": 2e-4, "settings": {"r": 16, "target_modules": ["q_proj", "v_proj"]}},
                                      "run": run, "eval": {}, "merge": {"status": "verified", "max_abs_logit_diff": 1.3e-4, "top1_agreement": 1.0}}},
    ]
    table = bench.sft_table(results)
    assert "| prompt_tuning | 0.03 | 11,520 (0.01%) | 95 | 3.10 | 1.234 | 1.100 | 50% | 25% | 0.457 | refused [1] | passed 4/4 (prompt embeds) | 20 |" in table
    assert f"- [1] {refused}" in table
    assert "verified: max \\|Δlogit\\| 1.3e-04, top-1 100%" in table
    assert "| lora | r 16, target_modules q_proj,v_proj |" in table
