"""The prompt embeddings `ftc serve` sends vLLM for a prompt-tuning or P-tuning run, checked against peft itself:
the base's logits on PromptEmbedder's inputs_embeds must equal PeftModel's on the token ids, and the parity
reference's uncached generation must equal a greedy loop over those embeddings. No vLLM here (test_serve.py)."""

from __future__ import annotations

import base64
import io
import json

import pytest
import torch
from peft import IA3Config, PeftModel, PromptEncoderConfig, PromptTuningConfig, get_peft_model
from tiny import make_varied_tiny_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftc.runtime.generate import prompt_ids, render_prompt
from ftc.runtime.serve.embeds import EmbedsUnavailable, PromptEmbedder, encode_embeds, load_virtual_tokens
from ftc.runtime.generate import generate_with_virtual_tokens

CONFIGS = {
    "prompt_tuning": lambda: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6),
    "p_tuning": lambda: PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=6, encoder_hidden_size=32),
}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """The tiny Llama with large weights (std 0.2), so that greedy answers vary from token to token."""
    folder = make_varied_tiny_llama(tmp_path_factory.mktemp("embeds") / "base")
    return folder


def _base(base_dir):
    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def adapter(request, base_dir, tmp_path_factory):
    """A saved adapter after 3 optimizer steps: the virtual tokens (and P-tuning's encoder) moved off their start."""
    peft_model = get_peft_model(_base(base_dir), CONFIGS[request.param]())
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    ids = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")["input_ids"]
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        peft_model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp(request.param) / "final"
    peft_model.save_pretrained(folder)
    return folder


def _chat_ids(base_dir, text: str) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    return prompt_ids(tokenizer, render_prompt(tokenizer, None, [{"role": "user", "content": text}]))


def test_embeds_give_the_base_peft_s_logits(base_dir, adapter):
    peft_model = PeftModel.from_pretrained(_base(base_dir), str(adapter)).eval()
    base = _base(base_dir)
    embedder = PromptEmbedder.from_model(base, adapter)
    ids = _chat_ids(base_dir, "What is 12 + 30?")
    embeds = embedder.embeds(ids)
    assert embeds.shape == (6 + len(ids), base.config.hidden_size) and embedder.num_virtual_tokens == 6
    with torch.no_grad():
        expected = peft_model(input_ids=torch.tensor([ids])).logits[0]
        got = base(inputs_embeds=embeds[None]).logits[0]
        plain = base(input_ids=torch.tensor([ids])).logits[0]
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
    assert not torch.allclose(got[6:], plain, atol=1e-3)  # the virtual tokens change the answer


def test_the_virtual_tokens_are_peft_s_prepended_prompt(base_dir, adapter):
    """For P-tuning too, what is saved (and prepended) is the encoder's output, not its input embedding."""
    peft_model = PeftModel.from_pretrained(_base(base_dir), str(adapter)).eval()
    virtual = load_virtual_tokens(adapter)
    assert torch.equal(virtual, peft_model.get_prompt(batch_size=1)[0])
    assert virtual.abs().sum() > 0


def test_uncached_reference_is_a_greedy_loop_over_the_embeds(base_dir, adapter):
    peft_model = PeftModel.from_pretrained(_base(base_dir), str(adapter)).eval()
    base = _base(base_dir)
    embedder = PromptEmbedder.from_model(base, adapter)
    ids = _chat_ids(base_dir, "List three colours.")
    answer, stopped = generate_with_virtual_tokens(peft_model, ids, stop_ids=[], pad_id=0, max_new_tokens=12)
    sequence, expected = list(ids), []
    with torch.no_grad():
        for _ in range(12):
            token = int(base(inputs_embeds=embedder.embeds(sequence)[None]).logits[0, -1].argmax())
            expected.append(token)
            sequence.append(token)
    assert (answer, stopped) == (expected, False)
    assert len(set(answer)) > 3  # varied tokens: agreement means something


def test_payload_is_vllm_s_prompt_embeds_format(base_dir, adapter):
    embedder = PromptEmbedder.from_model(_base(base_dir), adapter)
    ids = [5, 6, 7]
    tensor = torch.load(io.BytesIO(base64.b64decode(embedder.payload(ids), validate=True)), weights_only=True)
    assert tensor.dtype == torch.float32 and torch.equal(tensor, embedder.embeds(ids))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        embedder.embeds([10**6])
    assert torch.equal(torch.load(io.BytesIO(base64.b64decode(encode_embeds(tensor[:2]))), weights_only=True), tensor[:2])


def test_other_adapters_have_no_virtual_tokens(base_dir, tmp_path):
    ia3 = get_peft_model(_base(base_dir), IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]))
    ia3.save_pretrained(tmp_path / "ia3")
    with pytest.raises(EmbedsUnavailable, match="IA3 adapter; only prompt tuning and P-tuning"):
        load_virtual_tokens(tmp_path / "ia3")
    with pytest.raises(EmbedsUnavailable, match="holds no peft adapter"):
        load_virtual_tokens(tmp_path)


def test_a_mismatched_virtual_token_count_is_refused(adapter, tmp_path):
    config = json.loads((adapter / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "num_virtual_tokens": 7}))
    (tmp_path / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    with pytest.raises(EmbedsUnavailable, match=r"shape \(6, 128\); the adapter config says 7"):
        load_virtual_tokens(tmp_path)
