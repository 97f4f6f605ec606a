"""A tiny random Llama and its tokenizer, built offline in about a second, for tests that train.

hidden 128 with 2 heads gives head_dim 64, which vLLM's CPU attention accepts. The tokenizer is a
byte-level BPE trained on a few sentences, with a ChatML template whose end-of-turn is its EOS.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CORPUS = [
    "You are a helpful assistant.",
    'Ticket: my invoice was charged twice. {"category": "billing", "priority": "high"}',
    "The quick brown fox jumps over the lazy dog. Count: one two three four five.",
    "system user assistant hello world thanks goodbye yes no login password crash refund",
    "0 1 2 3 4 5 6 7 8 9 10 + - * / = ? ! , . : ; ( ) [ ] { } \" '",
]


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>", chat_template=CHAT_TEMPLATE, model_max_length=2048
    )


def make_tiny_llama(out_dir: Path) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out_dir)  # safetensors
    tokenizer.save_pretrained(out_dir)
    return out_dir


def make_varied_tiny_llama(out_dir: Path, std: float = 0.2) -> Path:
    """The tiny Llama with its matrices redrawn large (std 0.2, seed 0), so that greedy answers vary from token to
    token (with the usual std 0.02 it only ever says "\\n") and a 4-bit rounding can flip its top tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    make_tiny_llama(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, std)
    model.save_pretrained(out_dir)
    return out_dir
