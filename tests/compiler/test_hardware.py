"""The hardware planner: memory parts checked by hand on a Llama-3.2-1B-shaped config, the refusal of a plan
that does not fit (and that its suggested change really fits), micro_batch_size = "auto", and the time formula."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import GOLDEN_PACKAGES

from ftc.compiler.build.compile import compile_build
from ftc.compiler.diagnostics import SpecError, render
from ftc.compiler.plan.gpus import GPUS
from ftc.compiler.plan.hardware import (
    GIB,
    NF4_BITS,
    Target,
    Workload,
    choose_micro_batch,
    flops_per_token,
    memory_parts,
    peak_gib,
    time_estimate,
    verdict,
)
from ftc.compiler.plan.modelinfo import ModelInfo
from ftc.compiler.spec.hardware import GPU_TYPES

# Llama-3.2-1B's shape: hidden 2048, 16 layers, 32 heads of 64, 8 key/value heads, MLP 8192, vocab 128256, tied.
H, LAYERS, HEADS, KV_HEADS, HEAD_DIM, MLP, VOCAB = 2048, 16, 32, 8, 64, 8192, 128256
KV = KV_HEADS * HEAD_DIM


def llama_1b() -> ModelInfo:
    linear = {}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        linear |= {
            f"{p}.self_attn.q_proj": (H, H), f"{p}.self_attn.k_proj": (H, KV), f"{p}.self_attn.v_proj": (H, KV),
            f"{p}.self_attn.o_proj": (H, H), f"{p}.mlp.gate_proj": (H, MLP), f"{p}.mlp.up_proj": (H, MLP),
            f"{p}.mlp.down_proj": (MLP, H),
        }
    norms = (2 * LAYERS + 1) * H
    total = VOCAB * H + sum(i * o for i, o in linear.values()) + norms
    return ModelInfo(
        architecture="LlamaForCausalLM", model_type="llama", hidden_size=H, num_layers=LAYERS, vocab_size=VOCAB,
        max_position_embeddings=131072, total_params=total, linear_shapes=linear, param_counts={"model": total, "lm_head": 0},
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, intermediate_size=MLP,
    )


INFO = llama_1b()
N = INFO.total_params
LINEAR = sum(i * o for i, o in INFO.linear_shapes.values())


def full(**changes) -> Workload:
    w = Workload(
        info=INFO, device="cuda", kind="full", adapter="none", trainable=N, weight_dtype="bfloat16", precision="bf16",
        optim="adamw_torch", double_quant=False, lora_dropout=0.0, adapted_features=0, attention="sdpa",
        packing=False, max_length=1024, micro_batch_size=2, checkpointing=False, devices=1, strategy="none",
    )
    return dataclasses.replace(w, **changes)


def test_the_config_is_a_1b_llama():
    assert 1.23e9 < N < 1.24e9


def test_full_fine_tuning_weights_gradients_optimizer_by_hand():
    parts = memory_parts(full())
    assert parts["weights"] == 2 * N  # bf16
    assert parts["gradients"] == 2 * N
    assert parts["optimizer"] == 4 * N  # torch's AdamW allocates its two moments like the bf16 parameters
    assert parts["master_weights"] == 0
    # fp32 weights under bf16 autocast: the classic 16 bytes per parameter
    parts = memory_parts(full(weight_dtype="float32"))
    assert parts["weights"] + parts["gradients"] + parts["optimizer"] == 16 * N
    # 8-bit AdamW: 2 bytes of state per parameter; SGD none
    assert memory_parts(full(optim="adamw_bnb_8bit"))["optimizer"] == 2 * N
    assert memory_parts(full(optim="sgd"))["optimizer"] == 0


def test_sharding_divides_what_each_strategy_shards():
    # DeepSpeed in bf16: 2 (weights) + 4 (fp32 master) + 2 (gradients) + 8 (AdamW) = 16 bytes per parameter
    zero3 = memory_parts(full(devices=8, strategy="deepspeed_zero3"))
    assert zero3["weights"] == 2 * N / 8 and zero3["master_weights"] == 4 * N / 8
    assert zero3["gradients"] == 2 * N / 8 and zero3["optimizer"] == 8 * N / 8
    assert zero3["weights"] + zero3["master_weights"] + zero3["gradients"] + zero3["optimizer"] == 16 * N / 8
    assert zero3["gathered_weights"] == (2 * LINEAR / LAYERS + (N - LINEAR)) * 2
    zero2 = memory_parts(full(devices=8, strategy="deepspeed_zero2"))
    assert zero2["weights"] == 2 * N and zero2["gathered_weights"] == 0
    assert zero2["master_weights"] + zero2["gradients"] + zero2["optimizer"] == 14 * N / 8
    fsdp = memory_parts(full(devices=8, strategy="fsdp"))  # accelerate upcasts the sharded weights to fp32
    assert fsdp["weights"] + fsdp["gradients"] + fsdp["optimizer"] == 16 * N / 8
    ddp = memory_parts(full(devices=8, strategy="ddp"))  # nothing divides; the buckets double the gradients
    assert ddp["weights"] == 2 * N and ddp["gradients"] == 4 * N and ddp["optimizer"] == 4 * N
    # activations and logits never divide
    for parts in (zero3, zero2, fsdp, ddp):
        assert parts["activations"] == memory_parts(full())["activations"]
        assert parts["logits"] == memory_parts(full())["logits"]
        assert parts["overhead"] == 1.5 * GIB  # CUDA context and NCCL


def test_activations_and_logits_by_hand():
    tokens = 2 * 1024
    per_layer = 20 * H + 4 * KV + 8 * MLP
    head = 6 * H
    parts = memory_parts(full())
    assert parts["activations"] == tokens * (LAYERS * per_layer + head)
    assert parts["logits"] == tokens * VOCAB * 12
    assert parts["overhead"] == 1 * GIB
    eager = memory_parts(full(attention="eager"))["activations"]
    assert eager == tokens * (LAYERS * (per_layer + HEADS * 1024 * 6) + head)  # the seq x seq softmax, fp32 + bf16
    checkpointed = memory_parts(full(checkpointing=True))["activations"]
    assert checkpointed == tokens * (LAYERS * 2 * H + per_layer + head)  # layer inputs, and one layer recomputed
    fp32 = memory_parts(full(precision="fp32", weight_dtype="float32"))["activations"]
    assert fp32 == tokens * (LAYERS * 2 * per_layer + 8 * H)
    dpo = memory_parts(full(kind="dpo", sequences_per_example=2, reference_forward=True))
    assert dpo["activations"] == 2 * parts["activations"] and dpo["reference_model"] == 2 * N  # chosen + rejected


def test_grpo_counts_its_group_the_reward_models_the_reference_and_sampling():
    lora = full(kind="grpo", adapter="lora", trainable=1000, micro_batch_size=2)
    plain = memory_parts(lora)
    group = memory_parts(dataclasses.replace(lora, sequences_per_example=4, completion_length=64))
    assert group["activations"] == 4 * plain["activations"] and group["logits"] == 4 * plain["logits"]
    tokens = 2 * 4 * 1024  # 2 prompts x 4 completions x max_length
    assert group["kv_cache"] == tokens * LAYERS * 2 * KV * 2  # keys and values of every layer, in bf16
    assert plain["kv_cache"] == 0 and plain["reward_models"] == 0
    scored = memory_parts(dataclasses.replace(lora, reward_params=N))
    assert scored["reward_models"] == 2 * N  # a reward model of the policy's size, frozen in bf16
    assert memory_parts(dataclasses.replace(lora, reference_forward=True))["reference_model"] == 0  # the adapter off
    full_weights = dataclasses.replace(lora, adapter="none", trainable=N, reference_forward=True)
    assert memory_parts(full_weights)["reference_model"] == 2 * N  # beta > 0 without an adapter: a frozen copy


def test_grpo_time_adds_the_reward_models_and_the_sampling():
    context = 1024
    matmul = LINEAR + VOCAB * H
    lora = full(kind="grpo", adapter="lora", trainable=1000, sequences_per_example=4, completion_length=64)
    assert flops_per_token(dataclasses.replace(lora, reward_params=N), context) == flops_per_token(lora, context) + 2 * N
    t = SimpleNamespace(max_steps=10, steps_per_epoch=100, batch_size=8)
    d = SimpleNamespace(max_length=1024, packing=False, splits={"train": SimpleNamespace(tokens=100_000, examples=800)})
    h100 = Target("H100", 79.65, 989.0)
    time = time_estimate(lora, h100, t, d)
    assert time["generated_tokens"] == 10 * 8 * 4 * 64  # steps x prompts x completions x max_completion_length
    training = time["tokens"] * flops_per_token(lora, 125) / (989e12 * 0.35)
    sampling = time["generated_tokens"] * 2 * matmul / (989e12 * 0.05)
    assert time["seconds"] == round(training + sampling, 1)
    assert "generated_tokens" not in time_estimate(full(), h100, t, d)


def test_lora_and_qlora_by_hand():
    r = 16
    targets = {"q_proj": (H, H), "v_proj": (H, KV)}
    trainable = LAYERS * sum(r * (i + o) for i, o in targets.values())
    features = LAYERS * (H + H)
    lora = full(kind="lora", adapter="lora", trainable=trainable, adapted_features=features, lora_dropout=0.05)
    parts = memory_parts(lora)
    assert parts["weights"] == 2 * N + 4 * trainable  # bf16 base, fp32 adapters
    assert parts["gradients"] == 4 * trainable and parts["optimizer"] == 8 * trainable
    base = memory_parts(full())["activations"]
    assert parts["activations"] == base + 2 * 1024 * features * 3  # each adapter's bf16 input and a dropout mask
    qlora = dataclasses.replace(lora, kind="qlora", double_quant=True, optim="paged_adamw_8bit")
    largest = H * MLP
    expected = LINEAR * (4 + 8 / 64 + 32 / (64 * 256)) / 8 + (N - LINEAR) * 4 + largest * 2 + 4 * trainable
    assert NF4_BITS[True] == pytest.approx(4.127, abs=1e-3)
    assert memory_parts(qlora)["weights"] == pytest.approx(expected)
    assert memory_parts(qlora)["optimizer"] == 2 * trainable
    assert peak_gib(qlora) < peak_gib(lora) < peak_gib(full())


def test_verdicts_and_the_gpu_table():
    assert set(GPU_TYPES) == set(GPUS) >= {"L4", "RTX4090", "A10G", "A100-40GB", "A100-80GB", "H100", "H200"}
    assert {name: gpu.bf16_tflops for name, gpu in GPUS.items()} == {
        "L4": 121.0, "RTX4090": 165.2, "A10G": 125.0, "A100-40GB": 312.0, "A100-80GB": 312.0, "H100": 989.0, "H200": 989.0,
    }
    l4 = Target("L4", 22.49, 121.0)
    assert verdict(20.0, l4, "cuda") == "fits"
    assert verdict(21.0, l4, "cuda") == "tight"
    assert verdict(23.0, l4, "cuda") == "does not fit"
    assert verdict(23.0, None, "cuda") == "unknown"
    assert verdict(23.0, l4, "cpu") == "not applicable"


def test_auto_micro_batch_is_the_largest_divisor_that_fits():
    h100 = Target("H100", GPUS["H100"].memory_gib, GPUS["H100"].bf16_tflops)
    chosen = choose_micro_batch(full(micro_batch_size=1, checkpointing=True), h100, 48)
    assert chosen is not None and 48 % chosen == 0
    assert peak_gib(full(micro_batch_size=chosen, checkpointing=True)) <= 0.9 * h100.memory_gib
    bigger = [m for m in range(chosen + 1, 49) if 48 % m == 0]
    assert all(peak_gib(full(micro_batch_size=m, checkpointing=True)) > 0.9 * h100.memory_gib for m in bigger)
    assert choose_micro_batch(full(micro_batch_size=1), Target("tiny", 2.0, None), 48) is None


def test_time_formula():
    context = 1024
    matmul = LINEAR + VOCAB * H  # every matmul's weights, the output head included
    attention = LAYERS * HEADS * HEAD_DIM * context
    assert flops_per_token(full(), context) == 6 * matmul + 12 * attention
    assert flops_per_token(full(checkpointing=True), context) == 8 * matmul + 16 * attention
    lora = full(kind="lora", adapter="lora", trainable=1000)
    assert flops_per_token(lora, context) == 4 * matmul + 6 * 1000 + 12 * attention
    t = SimpleNamespace(max_steps=50, steps_per_epoch=100)  # the plan's training and data sections, as read
    d = SimpleNamespace(max_length=1024, packing=True, splits={"train": SimpleNamespace(tokens=2_000_000, examples=4000)})
    h100 = Target("H100", 79.65, 989.0)
    time = time_estimate(full(), h100, t, d)
    assert time["tokens"] == 1_000_000  # half an epoch
    assert time["utilization"] == 0.4 and time["attention_context"] == 1024
    assert time["seconds"] == round(1_000_000 * flops_per_token(full(), 1024) / (989e12 * 0.4), 1)
    d.packing = False  # attention spans the mean example (500 tokens), not max_length
    assert time_estimate(full(), h100, t, d)["attention_context"] == 500
    assert time_estimate(full(devices=4, strategy="fsdp"), h100, t, d)["seconds"] == pytest.approx(time_estimate(full(), h100, t, d)["seconds"] / 4, abs=0.1)
    assert time_estimate(full(), Target(None, 80.0, None), t, d) is None
    assert time_estimate(full(device="cpu"), h100, t, d) is None


# -- compiled specs ---------------------------------------------------------------------------------

CHATS = [
    {"messages": [{"role": "user", "content": f"hello {i} " * (1 + i % 5)}, {"role": "assistant", "content": "yes thanks " * (1 + i % 3)}]}
    for i in range(60)
]


def write_spec(tmp_path: Path, tiny_model: Path, training: str, hardware: str, model: str = "", max_length: int = 1024, data: str = "packing = false\n") -> Path:
    """Without packing by default: then the micro batch sets the activations (packed rows go one at a time)."""
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CHATS), encoding="utf-8")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f'[project]\nname = "fit"\n\n[model]\nbase = "{os.path.relpath(tiny_model, tmp_path)}"\n{model}\n'
        f'[data]\ntrain = "train.jsonl"\nformat = "chat"\nmax_length = {max_length}\n{data}\n'
        f'[method]\nkind = "full"\n\n[training]\nmax_steps = 4\nlearning_rate = 2e-5\n{training}\n\n[hardware]\n{hardware}\n',
        encoding="utf-8",
    )
    return spec


def _compile(spec: Path, root: Path):
    return compile_build(spec, root=root, packages=GOLDEN_PACKAGES)


def test_a_plan_that_does_not_fit_is_refused_and_the_suggested_change_fits(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, tiny_model, "batch_size = 64\nmicro_batch_size = 64", 'accelerator = "cuda"\ngpu_memory_gb = 1.6')
    with pytest.raises(SpecError) as caught:
        _compile(Path("spec.toml"), tmp_path)
    (diag,) = [d for d in caught.value.diagnostics if d.is_error]
    text = spec.read_text(encoding="utf-8").splitlines()
    assert (diag.file, diag.line, diag.key) == ("spec.toml", text.index("gpu_memory_gb = 1.6") + 1, "hardware.gpu_memory_gb")
    assert "does not fit" in diag.message and "the GPU's 1.6 GiB" in diag.message
    for part in ("weights", "gradients", "optimizer", "activations", "logits", "overhead 1.00", "micro batch 64 x 1024 tokens"):
        assert part in diag.detail
    shown = render([diag], {"spec.toml": spec.read_text(encoding="utf-8")})
    assert "= note: weights" in shown and "= hint: cheapest change that fits: training.micro_batch_size = " in shown
    found = re.search(r"training\.micro_batch_size = (\d+) -> estimated ([\d.]+) GiB", diag.hint)
    assert found, diag.hint
    micro, promised = int(found.group(1)), float(found.group(2))
    assert micro < 64 and 64 % micro == 0
    spec.write_text(spec.read_text(encoding="utf-8").replace("micro_batch_size = 64", f"micro_batch_size = {micro}"), encoding="utf-8")
    lock = _compile(Path("spec.toml"), tmp_path).lock
    e = lock.estimates
    assert e.verdict == "fits" and e.peak_memory_gib == promised <= 0.9 * 1.6
    assert lock.training.gradient_accumulation_steps == 64 // micro


EAGER = 'attn_implementation = "eager"\n'  # with a 2048-token seq x seq matrix per layer, checkpointing saves plenty


def _peak(tmp_path: Path, tiny_model: Path, training: str) -> float:
    write_spec(tmp_path, tiny_model, training, 'accelerator = "cuda"', EAGER, 2048)
    return _compile(Path("spec.toml"), tmp_path).lock.estimates.peak_memory_gib


def _between_checkpointing(tmp_path: Path, tiny_model: Path) -> float:
    """GPU memory (GiB) that micro batch 1 fits with gradient checkpointing and not without."""
    without = _peak(tmp_path, tiny_model, "batch_size = 8\nmicro_batch_size = 1")
    with_ = _peak(tmp_path, tiny_model, "batch_size = 8\nmicro_batch_size = 1\ngradient_checkpointing = true")
    assert with_ < without
    return round((with_ + without) / 2 / 0.9, 3)


def test_the_ladder_reaches_for_checkpointing(tmp_path, tiny_model, monkeypatch):
    """When micro batch 1 leaves too little room, the hint turns to the next change, and that change fits."""
    monkeypatch.chdir(tmp_path)
    memory = _between_checkpointing(tmp_path, tiny_model)
    spec = write_spec(tmp_path, tiny_model, "batch_size = 8\nmicro_batch_size = 1", f'accelerator = "cuda"\ngpu_memory_gb = {memory}', EAGER, 2048)
    build = _compile(Path("spec.toml"), tmp_path)
    assert build.lock.estimates.verdict == "tight"  # within 10% of the memory: a warning, with the same hint
    (diag,) = [d for d in build.warnings if d.key == "hardware.gpu_memory_gb"]
    assert "little room for the estimate's error" in diag.message
    assert "cheapest change that fits: training.gradient_checkpointing = true ->" in diag.hint, diag.hint
    spec.write_text(spec.read_text(encoding="utf-8").replace("micro_batch_size = 1", "micro_batch_size = 1\ngradient_checkpointing = true"), encoding="utf-8")
    build = _compile(Path("spec.toml"), tmp_path)
    assert build.lock.estimates.verdict == "fits" and not [d for d in build.warnings if d.key.startswith("hardware")]


def test_auto_micro_batch_is_chosen_and_recorded(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, tiny_model, 'batch_size = 64\nmicro_batch_size = "auto"', 'accelerator = "cuda"\ngpu_memory_gb = 2')
    build = _compile(Path("spec.toml"), tmp_path)
    t = build.lock.training
    assert t.micro_batch_size_auto is True
    assert 64 % t.micro_batch_size == 0 and t.gradient_accumulation_steps == 64 // t.micro_batch_size
    assert 1 < t.micro_batch_size < 64 and build.lock.estimates.verdict == "fits"
    assert f"MICRO_BATCH_SIZE = {t.micro_batch_size}" in build.files["train.py"]
    # the next larger divisor would not have fitted with room to spare
    write_spec(tmp_path, tiny_model, f"batch_size = 64\nmicro_batch_size = {t.micro_batch_size * 2}", 'accelerator = "cuda"\ngpu_memory_gb = 2')
    try:
        assert _compile(Path("spec.toml"), tmp_path).lock.estimates.verdict == "tight"
    except SpecError as exc:
        assert "does not fit" in str(exc)


def test_auto_micro_batch_that_cannot_fit_is_refused_on_its_key(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    memory = _between_checkpointing(tmp_path, tiny_model)
    spec = write_spec(tmp_path, tiny_model, 'batch_size = 8\nmicro_batch_size = "auto"', f'accelerator = "cuda"\ngpu_memory_gb = {memory}', EAGER, 2048)
    with pytest.raises(SpecError) as caught:
        _compile(Path("spec.toml"), tmp_path)
    (diag,) = [d for d in caught.value.diagnostics if d.is_error]
    assert diag.key == "training.micro_batch_size"
    assert diag.line == spec.read_text(encoding="utf-8").splitlines().index('micro_batch_size = "auto"') + 1
    assert "even a micro batch of 1" in diag.message
    assert "cheapest change that fits: training.gradient_checkpointing = true" in diag.hint


def test_no_verdict_without_gpu_memory_or_on_the_cpu(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, tiny_model, "batch_size = 64\nmicro_batch_size = 64", 'accelerator = "cuda"\ngpu_tflops = 100')
    e = _compile(Path("spec.toml"), tmp_path).lock.estimates
    assert e.verdict == "unknown" and e.headroom_gib is None and e.time.peak_tflops == 100
    write_spec(tmp_path, tiny_model, "batch_size = 64\nmicro_batch_size = 64", 'accelerator = "cpu"')
    e = _compile(Path("spec.toml"), tmp_path).lock.estimates
    assert e.device == "cpu" and e.verdict == "not applicable" and e.time is None
    assert e.breakdown_gib["overhead"] == 0


def test_plan_shows_the_verdict_and_the_time(tmp_path, tiny_model, monkeypatch):
    from ftc.compiler.plan.summary import describe_plan

    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, tiny_model, "batch_size = 8\nmicro_batch_size = 2", 'accelerator = "cuda"\ngpu_type = "H100"')
    text = describe_plan(_compile(Path("spec.toml"), tmp_path).lock)
    assert "gpu               H100: 79.65 GiB, 989 bf16 TFLOPS" in text
    assert "verdict           fits: " in text
    assert re.search(r"time              (about \d+ \w+|under a second): 4 steps x [\d.]+ s", text), text
    assert "at 40% of 989 TFLOPS x 1 device" in text
    write_spec(tmp_path, tiny_model, "batch_size = 8\nmicro_batch_size = 2", 'accelerator = "cuda"')
    text = describe_plan(_compile(Path("spec.toml"), tmp_path).lock)
    assert "verdict           none: no GPU memory given" in text and "no estimate: no GPU peak known" in text


def test_packed_rows_go_one_at_a_time_unless_the_attention_is_varlen():
    """The generated script passes packed rows one per forward with SDPA or eager attention (trl would flatten
    a micro batch into one row under one dense mask): activations are those of one row, whatever the micro batch."""
    packed = full(packing=True, micro_batch_size=4)
    assert packed.rows_per_forward == 1 and packed.tokens_per_forward == 1024
    assert memory_parts(packed)["activations"] == memory_parts(full(micro_batch_size=1))["activations"]
    flash = full(packing=True, micro_batch_size=4, attention="flash_attention_2")
    assert flash.rows_per_forward == 4 and memory_parts(flash)["activations"] == memory_parts(full(micro_batch_size=4))["activations"]
    assert full(packing=False, micro_batch_size=4).tokens_per_forward == 4 * 1024
