"""The GGUF writer on the tiny Llama: what it writes reads back through transformers' GGUF loader with the logits
and token ids of the Hugging Face model, the same inputs give the same bytes, and what it cannot write it refuses.

Measured on the tiny model over TEXTS (max |logit| 1.6): f16 max |dlogit| 4.6e-4, top-1 100%; q8_0 max 1.2e-2,
top-1 100%. A random model's attention is nearly uniform, so its logits barely notice a wrong layout: q and k
written without llama.cpp's permutation measured max |dlogit| 2.6e-2 and top-1 still 100%. The f16 test therefore
also compares every weight read back with the original (f16 rounds by at most 2^-11 relatively, max |dw| 3.0e-5
measured; unpermuted q/k measured 0.12), and bounds |dlogit| by 5e-3, ten times the measured drift.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ftc.runtime.export.gguf import GGUF_TYPES, GgufRefused, gguf_refusal, load_gguf, write_gguf

TEXTS = [
    "You are a helpful assistant.",
    "Ticket: my invoice was charged twice. 123 refund, 4567 login!",
    "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def reference(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model)


def _write(tiny_model, out, quant, tokenizer):
    stops = [tokenizer.eos_token_id]
    return write_gguf(tiny_model, out, quant, chat_template=tokenizer.chat_template, eos_token_ids=stops, name="tiny")


def _compare(reference, gguf_file):
    """(max |dlogit|, top-1 agreement) of the GGUF read back against the HF model, and that it tokenizes the same."""
    model, tokenizer = reference
    back, back_tokenizer = load_gguf(gguf_file)
    worst, agree, positions = 0.0, 0, 0
    with torch.no_grad():
        for text in TEXTS:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            assert back_tokenizer(text, return_tensors="pt")["input_ids"].tolist() == ids.tolist(), text
            a, b = model(ids).logits[0], back(ids).logits[0]
            worst = max(worst, (a - b).abs().max().item())
            agree += (a.argmax(-1) == b.argmax(-1)).sum().item()
            positions += ids.shape[1]
    return worst, agree / positions, back, back_tokenizer


def test_f16_reads_back_with_the_same_logits_tokens_and_template(tiny_model, reference, tmp_path):
    import gguf

    _, tokenizer = reference
    result = _write(tiny_model, tmp_path / "tiny-f16.gguf", "f16", tokenizer)
    assert result["tensors"] == 2 * 9 + 2 and result["fallback_f16"] == []  # tied: no output.weight

    worst, top1, back, back_tokenizer = _compare(reference, tmp_path / "tiny-f16.gguf")
    assert worst < 5e-3 and top1 == 1.0
    original, read_back = reference[0].state_dict(), back.state_dict()
    assert set(original) == set(read_back)
    for name, weight in original.items():
        assert torch.allclose(read_back[name], weight, rtol=1e-3, atol=1e-6), name
    assert back.config.tie_word_embeddings and back_tokenizer.chat_template == tokenizer.chat_template

    fields = gguf.GGUFReader(tmp_path / "tiny-f16.gguf").fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_F16
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False


def test_q8_0_keeps_the_top_token(tiny_model, reference, tmp_path):
    _, tokenizer = reference
    _write(tiny_model, tmp_path / "tiny-q8_0.gguf", "q8_0", tokenizer)
    worst, top1, _, _ = _compare(reference, tmp_path / "tiny-q8_0.gguf")
    assert top1 >= 0.9 and worst < 0.1


def test_the_same_inputs_give_the_same_bytes(tiny_model, reference, tmp_path):
    _, tokenizer = reference
    for quant in GGUF_TYPES:
        first, second = tmp_path / f"a-{quant}.gguf", tmp_path / f"b-{quant}.gguf"
        _write(tiny_model, first, quant, tokenizer)
        _write(tiny_model, second, quant, tokenizer)
        assert first.read_bytes() == second.read_bytes(), quant
    assert not list(tmp_path.glob(".*partial"))


def test_rows_not_a_multiple_of_32_fall_back_to_f16_and_are_named(tmp_path):
    from tiny import make_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "odd")
    tokenizer.save_pretrained(tmp_path / "odd")

    result = write_gguf(tmp_path / "odd", tmp_path / "odd.gguf", "q4_0", chat_template=None,
                        eos_token_ids=[tokenizer.eos_token_id], name="odd")
    # Rows of 48 (the hidden size) cannot be cut into 32-value blocks; ffn_down's rows are 64 long and can.
    assert result["fallback_f16"] == [
        "token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight",
        "blk.0.attn_output.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "output.weight",
    ]
    back, _ = load_gguf(tmp_path / "odd.gguf")
    assert not back.config.tie_word_embeddings and back.config.num_key_value_heads == 1


def test_a_model_that_is_not_a_llama_is_refused(tiny_model, reference, tmp_path):
    folder = shutil.copytree(tiny_model, tmp_path / "gpt2")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))

    reason = gguf_refusal(folder)
    assert "GPT2LMHeadModel" in reason and "LlamaForCausalLM" in reason
    with pytest.raises(GgufRefused, match="GPT2LMHeadModel"):
        _write(folder, tmp_path / "gpt2.gguf", "f16", reference[1])
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*partial"))
    assert gguf_refusal(tiny_model) is None


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(tiny_model, tmp_path):
    folder = shutil.copytree(tiny_model, tmp_path / "metaspace")
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    spec["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    assert "not byte-level BPE" in gguf_refusal(folder)


def test_an_unknown_type_is_an_error(tiny_model, reference, tmp_path):
    with pytest.raises(ValueError, match="q4_0"):
        _write(tiny_model, tmp_path / "x.gguf", "q5_k", reference[1])
