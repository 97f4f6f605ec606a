"""What `ftc serve` serves, resolved from a real 2-step LoRA run of the tiny Llama: its verified merged/, its
adapter on the base, or a plain model folder; the refusals; and the reference model transformers answers with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny_runs import trained_run

from ftc.runtime.generate import generate_one, prompt_ids, render_prompt
from ftc.runtime.merge import merge_run
from ftc.runtime.serve.settings import ServeOptions, ServeRefused, Settings
from ftc.runtime.serve.target import (
    LORA_RANKS,
    check_model_folder,
    context_length,
    load_reference,
    load_target_tokenizer,
    lora_rank,
    resolve_target,
    shown_model,
    stop_ids_of,
)

CPU = Settings("127.0.0.1", 8000, "cpu", "float32", None, "tiny", None)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model) -> Path:
    """A copy of the shared LoRA run, which this module merges; its run.json still names the run's project."""
    shared = trained_run(tmp_path_factory, tiny_model, "lora")
    copy = tmp_path_factory.mktemp("serve-target") / "runs" / "tiny-lora" / "copy"
    shutil.copytree(shared, copy, ignore=shutil.ignore_patterns("merged", "merged.rejected", "base-*"))
    return copy


def _resolve(tmp_path: Path, target: Path, root: Path | None = None, **options):
    return resolve_target(ServeOptions(target, **options), tmp_path, root or tmp_path, lambda step: None)


def test_lora_rank_rounds_up_to_what_vllm_serves():
    assert lora_rank({"r": 4}) == 8 and lora_rank({"r": 16}) == 16
    assert lora_rank({"r": 8, "rank_pattern": {"q_proj": 40}}) == 64
    with pytest.raises(ServeRefused, match="above 512"):
        lora_rank({"r": LORA_RANKS[-1] + 1})


def test_a_model_folder_must_load_in_vllm_as_it_is(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02")
    (folder / "adapter_config.json").write_text("{}")
    with pytest.raises(ServeRefused) as refused:
        check_model_folder(folder)
    message = str(refused.value)
    assert "no safetensors weights (only pickles: pytorch_model.bin)" in message and "it has no tokenizer" in message
    assert "serve its run with --adapter" in message


def test_a_plain_folder(tmp_path, tiny_model):
    target = _resolve(tmp_path, tiny_model)
    assert target.mode == "folder" and target.model == str(tiny_model) and target.run is None and target.adapter is None
    assert target.log == tiny_model / "serve.log" and target.chat_template_file == tiny_model / "chat_template.jinja"
    assert "<|im_start|>" in target.chat_template and context_length(target) == 2048 and shown_model(target) == str(tiny_model)
    tokenizer = load_target_tokenizer(target)
    assert tokenizer.pad_token is not None and tokenizer.chat_template == target.chat_template
    assert stop_ids_of(target, tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    # a folder's own generation_config.json adds its EOS ids
    folder = tmp_path / "with-eos"
    shutil.copytree(tiny_model, folder)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, tokenizer.eos_token_id]}))
    assert stop_ids_of(_resolve(tmp_path, folder), tokenizer) == [tokenizer.eos_token_id, 5]
    with pytest.raises(ServeRefused, match="--adapter needs a run folder"):
        _resolve(tmp_path, tiny_model, adapter=True)
    with pytest.raises(ServeRefused, match="not found"):
        _resolve(tmp_path, tmp_path / "nothing")


def test_a_run_is_served_from_its_verified_merge_only(tmp_path, run_dir):
    shutil.rmtree(run_dir / "merged", ignore_errors=True)
    with pytest.raises(ServeRefused, match=f"Run `ftc merge {run_dir}` first"):
        _resolve(tmp_path, run_dir)
    merge_run(run_dir, examples=1)
    target = _resolve(tmp_path, run_dir)
    assert target.mode == "merged" and target.model == str(run_dir / "merged") and target.run_dir == run_dir
    assert target.chat_template_file == run_dir / "merged" / "chat_template.jinja" and target.log == run_dir / "serve.log"
    assert shown_model(target) == "merged" and target.tokenizer_dir == run_dir / "merged"
    assert _resolve(tmp_path, run_dir / "merged").run_dir == run_dir  # a run's merged/ is served as that run
    # another chat template than the trained one is served, with a note
    other = tmp_path / "other.jinja"
    other.write_text("{{ messages[0]['content'] }}")
    noted = _resolve(tmp_path, run_dir, chat_template=other)
    assert noted.chat_template_file == other and "differs from the template the run trained with" in noted.notes[0]


def test_the_adapter_on_its_base_answers_as_the_merged_model(tmp_path, run_dir):
    if not (run_dir / "merged").is_dir():
        merge_run(run_dir, examples=1)
    adapter = _resolve(tmp_path / "adapter", run_dir, adapter=True)
    assert adapter.mode == "adapter" and adapter.adapter == run_dir / "final" and adapter.lora_rank == 8  # r = 4
    assert (adapter.tokenizer_dir / "tokenizer_config.json").is_file()
    assert adapter.base_model is None  # a dense safetensors base: vLLM loads it as it is, no copy is written
    assert shown_model(adapter).endswith(" + final/ (LoRA adapter)")
    merged = _resolve(tmp_path / "merged", run_dir)
    tokenizer = load_target_tokenizer(merged)
    stops = stop_ids_of(merged, tokenizer)
    assert stops == stop_ids_of(adapter, load_target_tokenizer(adapter))
    ids = prompt_ids(tokenizer, render_prompt(tokenizer, merged.chat_template, [{"role": "user", "content": "the app crashes at login"}]))
    answers = []
    for target in (adapter, merged):
        model, dtype = load_reference(target, CPU)
        assert dtype == "float32"
        answers.append(generate_one(model, ids, stops, tokenizer.pad_token_id, 8))
    assert answers[0] == answers[1]


def test_a_spec_means_its_newest_completed_run(tmp_path, tmp_path_factory, tiny_model):
    shared = trained_run(tmp_path_factory, tiny_model, "lora")
    project = shared.parents[2]
    target = _resolve(tmp_path, project / "spec.toml", root=project, adapter=True)
    assert target.run_dir == shared and target.mode == "adapter"
    with pytest.raises(ServeRefused, match="is a file"):
        _resolve(tmp_path, project / "data" / "train.jsonl")
