"""compressed-tensors export (runtime/export/compressed.py) of the tiny Llama: both schemes write a safetensors
checkpoint that transformers loads back with logits close to the dense model's, byte-identical on a second write;
W4A16's group size follows the layers' widths. vLLM is not started here (about 25 s per load on the CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from ftc.runtime.export.compressed import (
    SCHEMES,
    CompressedRefused,
    carried,
    group_size_for,
    load_compressed,
    write_compressed,
)

TEXTS = [
    "You are a helpful assistant.",
    "Ticket: my invoice was charged twice.",
    "The quick brown fox jumps over the lazy dog.",
    "hello world thanks goodbye",
]
# Measured on these texts (29 positions; the random tiny model's logits are nearly flat, |logit| < 2):
# w8a8 top-1 100%, max |dlogit| 0.016; w4a16 (group 128) top-1 93%, max |dlogit| 0.18.
MIN_TOP1 = {"w8a8": 0.95, "w4a16": 0.85}
MAX_DLOGIT = {"w8a8": 0.1, "w4a16": 0.5}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model):
    """scheme -> (out_dir, record), each written once for the module."""
    root = tmp_path_factory.mktemp("compressed")
    return {scheme: (root / scheme, write_compressed(tiny_model, root / scheme, scheme)) for scheme in SCHEMES}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_folder_is_servable(exported, tiny_model, scheme):
    out_dir, record = exported[scheme]
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(p.name for p in tiny_model.iterdir()), names  # same files, weights as safetensors only
    for name in ("chat_template.jinja", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out_dir / name).read_bytes() == (tiny_model / name).read_bytes(), name
    assert not list(out_dir.parent.glob(f".{scheme}.tmp-*")), "a temporary folder was left behind"
    template, stop_ids = carried(out_dir)
    assert template == (tiny_model / "chat_template.jinja").read_text()
    assert stop_ids == [json.loads((tiny_model / "generation_config.json").read_text())["eos_token_id"]]

    quant = json.loads((out_dir / "config.json").read_text())["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors" and quant["ignore"] == ["lm_head"]
    group = quant["config_groups"]["group_0"]
    assert quant["format"] == {"w8a8": "int-quantized", "w4a16": "pack-quantized"}[scheme]
    if scheme == "w8a8":
        assert group["weights"]["num_bits"] == 8 and group["weights"]["strategy"] == "channel"
        assert group["input_activations"]["dynamic"] is True and group["input_activations"]["strategy"] == "token"
    else:
        assert group["weights"]["num_bits"] == 4 and group["weights"]["group_size"] == 128
        assert group["input_activations"] is None

    from safetensors import safe_open

    with safe_open(str(out_dir / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.float32  # tied head: stays as it was
    assert not any(key.startswith("lm_head") for key in keys)
    packed = "weight" if scheme == "w8a8" else "weight_packed"
    assert f"model.layers.0.mlp.down_proj.{packed}" in keys and "model.layers.0.mlp.down_proj.weight_scale" in keys

    assert record == {
        "scheme": scheme,
        "method": "round-to-nearest",
        "ignored": ["lm_head"],
        "quantized_layers": 14,  # 2 layers x (q, k, v, o, gate, up, down)
        **({"group_size": 128} if scheme == "w4a16" else {}),
    }


@pytest.mark.parametrize("scheme", SCHEMES)
def test_logits_close_to_dense(exported, tiny_model, scheme):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    dense = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    quantized = load_compressed(exported[scheme][0])
    agree = positions = 0
    worst = 0.0
    for text in TEXTS:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            a, b = dense(ids).logits[0], quantized(ids).logits[0]
        assert b.dtype == torch.float32
        worst = max(worst, (a - b).abs().max().item())
        agree += (a.argmax(-1) == b.argmax(-1)).sum().item()
        positions += len(a)
    assert agree / positions >= MIN_TOP1[scheme], (agree, positions)
    assert 0 < worst <= MAX_DLOGIT[scheme], worst  # > 0: the weights really were quantized


def test_same_input_same_bytes(exported, tiny_model, tmp_path):
    for scheme in SCHEMES:
        again = write_compressed(tiny_model, tmp_path / scheme, scheme)
        first_dir, first_record = exported[scheme]
        assert again == first_record
        for path in sorted(first_dir.iterdir()):
            assert (tmp_path / scheme / path.name).read_bytes() == path.read_bytes(), (scheme, path.name)


def _config_only(folder, hidden, intermediate):
    from transformers import LlamaConfig

    LlamaConfig(
        vocab_size=64, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=1,
        num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=True,
    ).save_pretrained(folder)
    return folder


def test_group_size_divides_every_width(tmp_path, tiny_model):
    assert group_size_for(tiny_model) == 128  # hidden 128, intermediate 256
    assert group_size_for(tiny_model, preferred=64) == 64
    assert group_size_for(_config_only(tmp_path / "smollm2", 576, 1536)) == 64  # SmolLM2-135M's widths
    assert group_size_for(_config_only(tmp_path / "narrow", 128, 96)) == 32  # down_proj's input is 96 wide
    with pytest.raises(CompressedRefused, match="w8a8"):
        group_size_for(_config_only(tmp_path / "odd", 80, 160))


def test_refusals(tiny_model, tmp_path):
    with pytest.raises(CompressedRefused, match="unknown scheme 'int4'"):
        write_compressed(tiny_model, tmp_path / "out", "int4")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(CompressedRefused, match="not an empty folder"):
        write_compressed(tiny_model, busy, "w8a8")
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(CompressedRefused, match="source folder"):
        write_compressed(tiny_model, tiny_model, "w8a8")
    with pytest.raises(CompressedRefused, match="safetensors"):
        write_compressed(tmp_path / "nowhere", tmp_path / "out", "w8a8")
