"""`ftc serve` for the prompt-learning methods: a prompt-tuning run served through vLLM's prompt embeddings
behind ftc's front (the real vLLM, the parity gate, the `openai` client, the API key, Ctrl-C), and the refusals:
prefix tuning (vLLM cannot take it) and --adapter on an adapter vLLM cannot load.

The refusal tests build run folders without training: the compiled lock, run.json, and a peft adapter saved on
the tiny Llama (what training would leave in final/, only untrained)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from peft import IA3Config, PromptEncoderConfig, PromptTuningConfig, get_peft_model
from test_serve import KEY, KEY_ENV, free_port, needs_vllm, project_of, serving  # noqa: F401 - serving is a fixture
from tiny import make_varied_tiny_llama
from tiny_runs import DATA, train_run
from transformers import AutoModelForCausalLM

from ftc.cli.main import main
from ftc.compiler.build.compile import compile_build, write_build
from ftc.compiler.build.lock import LOCK_NAME
from ftc.runtime.runfolder import read_record
from ftc.runtime.serve.settings import ServeOptions, ServeRefused, Settings
from ftc.runtime.serve.target import load_reference, resolve_target, shown_model
from ftc.runtime.serve.vllm import server_command

CPU = Settings("127.0.0.1", 8000, "cpu", "float32", None, "tiny", None)


def untrained_run(project: Path, model: Path, kind: str, keys: str = "", adapter_config=None) -> Path:
    """A run folder as `ftc run` leaves it, with final/ holding `adapter_config`'s untrained adapter."""
    (project / "data").mkdir(parents=True)
    for split in ("train", "val"):
        lines = (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        (project / "data" / f"{split}.jsonl").write_text("".join(lines[:6]), encoding="utf-8")
    spec = project / "spec.toml"
    spec.write_text(
        f'[project]\nname = "tiny-{kind}"\n[model]\nbase = "{model}"\n'
        '[data]\ntrain = "data/train.jsonl"\nvalidation = "data/val.jsonl"\nformat = "chat"\n'
        f'[method]\nkind = "{kind}"\n{keys}\n[training]\nmax_steps = 2\n[hardware]\naccelerator = "cpu"\n',
        encoding="utf-8",
    )
    build = compile_build(spec, root=project)
    write_build(build)
    run_dir = project / "runs" / build.name / "test"
    run_dir.mkdir(parents=True)
    shutil.copy2(build.directory / LOCK_NAME, run_dir / LOCK_NAME)
    (run_dir / "run.json").write_text(json.dumps({"root": str(project), "status": "completed"}) + "\n", encoding="utf-8")
    if adapter_config is not None:
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        get_peft_model(base, adapter_config).save_pretrained(run_dir / "final")
    return run_dir


def _resolve(tmp_path: Path, run_dir: Path, **options):
    return resolve_target(ServeOptions(run_dir, **options), tmp_path, project_of(run_dir), lambda step: None)


def test_prefix_tuning_is_refused_with_the_plan_s_reason(tmp_path, tiny_model, capsys):
    run_dir = untrained_run(tmp_path / "p", tiny_model, "prefix_tuning", "num_virtual_tokens = 4")
    assert main(["serve", str(run_dir), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert f"ftc serve: refused: {run_dir} cannot be served: prefix tuning prepends learned keys and values" in err
    assert "Traceback" not in err


def test_adapter_mode_refuses_what_vllm_cannot_load(tmp_path, tiny_model, capsys):
    ia3 = IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    run_dir = untrained_run(tmp_path / "i", tiny_model, "ia3", adapter_config=ia3)
    with pytest.raises(ServeRefused, match=r"vLLM serves LoRA adapters only; serve merged/ \(ftc merge .*\) instead"):
        _resolve(tmp_path, run_dir, adapter=True)
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    prompt = untrained_run(tmp_path / "t", tiny_model, "prompt_tuning", "num_virtual_tokens = 4", config)
    assert main(["serve", str(prompt), "--adapter", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "vLLM serves LoRA adapters only; a prompt_tuning run is served through vLLM's prompt embeddings" in err
    assert f"`ftc serve {prompt}` without --adapter" in err and "Traceback" not in err


def test_a_p_tuning_run_is_served_as_prompt_embeds(tmp_path, tiny_model):
    config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=32)
    run_dir = untrained_run(tmp_path / "pt", tiny_model, "p_tuning", "num_virtual_tokens = 4\nencoder_hidden_size = 32", config)
    target = _resolve(tmp_path, run_dir)
    assert target.mode == "prompt_embeds" and target.adapter == run_dir / "final" and target.lora_rank is None
    assert shown_model(target).endswith(" + final/ (virtual tokens, as prompt embeddings)")
    assert target.base_model is not None and target.chat_template is not None
    argv, _ = server_command(target, CPU, tmp_path / "generation", None, None)
    assert "--enable-prompt-embeds" in argv and "--enable-lora" not in argv
    assert argv[argv.index("--tokenizer") + 1] == str((tmp_path / "tokenizer").resolve())
    model, dtype = load_reference(target, CPU)
    assert type(model).__name__ == "PeftModelForCausalLM" and dtype == "float32" and target.base_model is None


# --- the real server ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prompt_run(tmp_path_factory):
    """A 2-step prompt-tuning run of the tiny Llama with large random weights (varied greedy answers)."""
    model_dir = make_varied_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-varied")
    return train_run(tmp_path_factory.mktemp("project-prompt"), model_dir, "prompt_tuning")


@needs_vllm
def test_serve_prompt_tuning_through_prompt_embeds(prompt_run, serving):  # noqa: F811 - the fixture from test_serve
    from openai import AuthenticationError, BadRequestError, OpenAI

    port = free_port()
    began = time.monotonic()
    serve = serving(project_of(prompt_run), str(prompt_run), "--port", str(port), "--api-key-env", KEY_ENV, "--parity", "4", "--parity-tokens", "24")
    serve.wait_for("Ctrl-C stops the server")
    print(f"ftc serve was ready after {time.monotonic() - began:.0f}s")
    assert "parity passed: 4/4 prompts agree token for token (100%" in serve.output, serve.output
    assert f"ready: tiny-prompt_tuning at http://127.0.0.1:{port}/v1" in serve.output
    parity = read_record(prompt_run).parity["prompt_embeds"]
    assert parity.status == "passed" and parity.mode == "prompt_embeds" and parity.endpoint == "/v1/chat/completions"
    assert parity.model.endswith("+ final/ (virtual tokens, as prompt embeddings)")
    assert sum(row["tokens"] for row in parity.results) > 4  # not only stop tokens: agreement means something

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY)
    messages = [{"role": "user", "content": "Ticket: my invoice was charged twice."}]
    reply = client.chat.completions.create(model="tiny-prompt_tuning", messages=messages, max_tokens=8, temperature=0, logprobs=True)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 8  # the virtual tokens count as prompt
    assert len(choice.logprobs.content) == reply.usage.completion_tokens
    again = client.chat.completions.create(model="tiny-prompt_tuning", messages=messages, max_tokens=8, temperature=0)
    assert again.choices[0].message.content == choice.message.content
    completion = client.completions.create(model="tiny-prompt_tuning", prompt="The quick brown fox", max_tokens=4, temperature=0)
    assert completion.choices[0].text and completion.model == "tiny-prompt_tuning"
    assert [m.id for m in client.models.list()] == ["tiny-prompt_tuning"]
    with pytest.raises(BadRequestError, match="stream: true is not supported"):
        client.chat.completions.create(model="tiny-prompt_tuning", messages=messages, stream=True)
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong").chat.completions.create(model="tiny-prompt_tuning", messages=messages)

    code, left = serve.interrupt()
    assert code == 0, serve.output
    assert left == [], f"processes left running after Ctrl-C: {left}"
