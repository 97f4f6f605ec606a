"""`ftc merge` on real 2-step runs of the tiny Llama: what merged/ holds, that it reproduces the trained model,
and that a merge which does not is refused."""

from __future__ import annotations

import json

import pytest
from tiny_runs import trained_run

from ftc.cli.main import main
from ftc.runtime import merge
from ftc.runtime.merge import MergeFailed, merge_run, verify
from ftc.runtime.models import (
    load_dense_base,
    load_tokenizer,
    load_tuned,
    locked_chat_template,
    open_run,
    placement,
)
from ftc.runtime.runfolder import read_record

IM_END = "<|im_end|>"


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model):
    """trained(method) -> the folder of a finished 2-step run (shared by every test module in the session)."""
    return lambda method: trained_run(tmp_path_factory, tiny_model, method)


def _locked_template(run_dir):
    run = open_run(run_dir)
    return (run.root / "build" / run.name / "chat_template.jinja").read_bytes()


def _check_servable_folder(run_dir):
    merged = run_dir / "merged"
    names = {p.name for p in merged.iterdir()}
    assert "model.safetensors" in names and "config.json" in names, names
    assert (
        not {"adapter_config.json", "adapter_model.safetensors", "training_args.bin"}
        & names
    ), names
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())
    assert (merged / "chat_template.jinja").read_bytes() == _locked_template(run_dir)
    tokenizer = load_tokenizer(open_run(run_dir))
    eos = json.loads((merged / "generation_config.json").read_text())["eos_token_id"]
    assert (
        tokenizer.convert_tokens_to_ids(IM_END) in eos and tokenizer.eos_token_id in eos
    )
    assert not list(run_dir.glob(".merged*")), "a temporary folder was left behind"


def _logits_agree_with_trained(run_dir, limit):
    from transformers import AutoModelForCausalLM

    run = open_run(run_dir)
    place = placement(run.lock)
    tokenizer = load_tokenizer(run)
    inputs = merge.verification_inputs(run, tokenizer, locked_chat_template(run)[0], 2)
    plain = AutoModelForCausalLM.from_pretrained(
        str(run_dir / "merged"), use_safetensors=True
    ).eval()
    result = verify(load_tuned(run, place), plain, inputs, "float32")
    assert result.passed and result.max_abs_logit_diff < limit, result.summary()
    assert result.top1_agreement == 1.0


def test_lora_merge_is_verified_and_loads_as_a_plain_model(trained):
    run_dir = trained("lora")
    result = merge_run(run_dir, examples=3)
    record = read_record(run_dir).merge
    assert record == result.record
    assert (
        record.status == "verified"
        and record.path == "merged"
        and record.dtype == "float32"
    )
    assert record.examples == 3 and record.positions > 100
    assert record.max_abs_logit_diff <= record.tolerance.max_abs_logit_diff
    assert record.top1_agreement == 1.0
    _check_servable_folder(run_dir)
    _logits_agree_with_trained(run_dir, 1e-5)


def test_qlora_merges_into_the_dequantized_base(trained, tiny_model):
    from transformers import AutoModelForCausalLM

    run_dir = trained("qlora")
    record = merge_run(run_dir).record
    assert record.status == "verified", record
    _check_servable_folder(run_dir)
    _logits_agree_with_trained(run_dir, 1e-5)
    # Merging into the original full-precision weights instead gives a model the adapter was not trained with:
    run = open_run(run_dir)
    place = placement(run.lock)
    inputs = merge.verification_inputs(
        run, load_tokenizer(run), locked_chat_template(run)[0], 2
    )
    wrong = load_tuned(run, place, load_dense_base(run, place)).merge_and_unload()
    result = verify(load_tuned(run, place), wrong, inputs, "float32")
    assert not result.passed, result.summary()
    assert result.max_abs_logit_diff > 100 * record.max_abs_logit_diff
    original = AutoModelForCausalLM.from_pretrained(
        str(tiny_model), use_safetensors=True
    )
    merged = AutoModelForCausalLM.from_pretrained(
        str(run_dir / "merged"), use_safetensors=True
    )
    name = "model.layers.0.mlp.down_proj.weight"
    assert not merged.state_dict()[name].equal(original.state_dict()[name])


def test_full_fine_tuning_has_nothing_to_merge(trained):
    run_dir = trained("full")
    assert main(["merge", str(run_dir)]) == 0
    record = read_record(run_dir).merge
    assert record.status == "not needed" and record.path == "merged"
    _check_servable_folder(run_dir)
    assert (run_dir / "merged" / "model.safetensors").read_bytes() == (
        run_dir / "final" / "model.safetensors"
    ).read_bytes()


def test_verification_fails_when_the_models_differ(trained):
    run_dir = trained("lora")
    run = open_run(run_dir)
    place = placement(run.lock)
    inputs = merge.verification_inputs(
        run, load_tokenizer(run), locked_chat_template(run)[0], 2
    )
    tuned = load_tuned(run, place)
    with tuned.disable_adapter():  # the base alone: a merge that lost the adapter
        base_logits = merge.logits_of(tuned, inputs)
    result = merge.compare_logits(
        merge.logits_of(tuned, inputs), base_logits, "float32"
    )
    assert not result.passed
    assert result.record("merged").status == "failed"


def test_a_failed_merge_leaves_no_merged_folder(trained, monkeypatch):
    run_dir = trained("lora")
    merge_run(run_dir)
    assert (run_dir / "merged").is_dir()
    # No tolerance at all: the merge's real float32 rounding (about 1e-6) now fails verification.
    monkeypatch.setitem(merge.TOLERANCE, "float32", (0.0, 0.0, 1.0))
    with pytest.raises(MergeFailed, match="merged.rejected"):
        merge_run(run_dir)
    assert not (run_dir / "merged").exists()
    assert (run_dir / "merged.rejected" / "model.safetensors").is_file()
    assert read_record(run_dir).merge.status == "failed"
    assert main(["merge", str(run_dir)]) == 1
    monkeypatch.undo()
    merge_run(run_dir)
    assert (run_dir / "merged").is_dir() and not (run_dir / "merged.rejected").exists()
    assert read_record(run_dir).merge.status == "verified"


def test_usage_errors_exit_2(tmp_path):
    assert main(["merge", str(tmp_path)]) == 2
    assert main(["merge", str(tmp_path / "missing")]) == 2


def test_preference_data_verifies_on_prompt_and_chosen(tmp_path):
    from conftest import REPO
    from tiny import CHAT_TEMPLATE, make_tokenizer

    from ftc.compiler.build.lock import read_lock
    from ftc.runtime.models import RunFolder

    lock = read_lock(REPO / "tests" / "golden" / "triage-dpo" / "ftc.lock.json")
    tokenizer = make_tokenizer()
    inputs = merge.verification_inputs(
        RunFolder(tmp_path, REPO, lock), tokenizer, CHAT_TEMPLATE, 2
    )
    assert len(inputs) == 2
    text = tokenizer.decode(inputs[0])
    assert (
        text.startswith("<|im_start|>user")
        and '"category"' in text
        and text.endswith("<|im_end|>\n")
    )
