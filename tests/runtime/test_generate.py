"""Greedy generation as samples, eval, merge and serve share it: the prompt, the stop tokens, cutting at a stop,
and batched answers against one-at-a-time ones, on the tiny Llama with large random weights (std 0.2), so that
greedy answers vary from token to token."""

from __future__ import annotations

import pytest
from tiny import CHAT_TEMPLATE, make_tokenizer

from ftc.runtime.generate import (
    Answer,
    cut_at_stop,
    end_of_turn_ids,
    generate_answers,
    generate_one,
    greedy_config,
    prompt_ids,
    prompt_of,
    render_prompt,
    stop_token_ids,
)

IM_END = "<|im_end|>"
QUESTIONS = ["hello world", "the app crashes at login", "refund my order please", "Count: one two three", "thanks"]


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """(model, tokenizer): the tiny Llama with large random weights, in float32 on the CPU."""
    import torch
    from tiny import make_tiny_llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-varied")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 0.2)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def _texts(tokenizer) -> list[str]:
    return [render_prompt(tokenizer, CHAT_TEMPLATE, [{"role": "user", "content": q}]) for q in QUESTIONS]


# --- the prompt ----------------------------------------------------------------------------------------------


def test_a_prompt_is_rendered_with_the_generation_prompt_and_no_added_special_tokens():
    tokenizer = make_tokenizer()
    messages = [{"role": "user", "content": "hello"}]
    text = render_prompt(tokenizer, CHAT_TEMPLATE, messages)
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    ids = prompt_ids(tokenizer, text)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and tokenizer.decode(ids) == text
    # another template than the tokenizer's own is the one rendered
    assert render_prompt(tokenizer, "{{ messages[0]['content'] }}!", messages) == "hello!"


def test_prompts_of_each_data_format():
    tokenizer = make_tokenizer()
    user = {"role": "user", "content": "hello"}
    answer = {"role": "assistant", "content": "yes"}
    chat = prompt_of({"messages": [user, answer, user, answer]}, "chat", tokenizer, CHAT_TEMPLATE)
    assert chat.shown == "hello" and chat.reference == "yes" and chat.messages == [user, answer, user]
    assert chat.text.count("<|im_start|>user") == 2 and chat.text.endswith("<|im_start|>assistant\n")
    plain = prompt_of({"prompt": "Ticket: x\nTriage:", "completion": " {}"}, "completion", tokenizer, CHAT_TEMPLATE)
    # A plain-string prompt goes in as it was trained: without the template.
    assert plain.text == "Ticket: x\nTriage:" and plain.reference == " {}" and plain.messages is None
    pair = prompt_of({"prompt": [user], "chosen": [answer], "rejected": [user]}, "preference", tokenizer, CHAT_TEMPLATE)
    assert pair.reference == "yes" and pair.text.endswith("<|im_start|>assistant\n")
    assert prompt_of({"messages": [user]}, "chat", tokenizer, CHAT_TEMPLATE) is None
    assert prompt_of({"messages": [answer, user]}, "chat", tokenizer, CHAT_TEMPLATE) is None  # nothing before the answer
    assert prompt_of({"text": "abc"}, "text", tokenizer, None) is None


# --- where an answer stops -----------------------------------------------------------------------------------


def test_stop_tokens_are_the_eos_and_the_end_of_turn():
    tokenizer = make_tokenizer()
    assert stop_token_ids(tokenizer, CHAT_TEMPLATE) == [tokenizer.convert_tokens_to_ids(IM_END)]  # EOS is the end of turn
    # A model whose EOS is not its end-of-turn token:
    tokenizer.eos_token = "<|endoftext|>"
    assert end_of_turn_ids(tokenizer, CHAT_TEMPLATE) == [tokenizer.convert_tokens_to_ids(IM_END)]
    assert stop_token_ids(tokenizer, CHAT_TEMPLATE) == [
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        tokenizer.convert_tokens_to_ids(IM_END),
    ]
    assert stop_token_ids(tokenizer, None) == [tokenizer.eos_token_id]
    assert end_of_turn_ids(tokenizer, None) == []


def test_cut_at_stop():
    assert cut_at_stop([5, 6, 2, 7, 2], [2, 9]) == ([5, 6], True)
    assert cut_at_stop([9], [2, 9]) == ([], True)
    assert cut_at_stop([5, 6], [2]) == ([5, 6], False)
    assert cut_at_stop([], [2]) == ([], False)


def test_the_greedy_config_is_greedy_and_stops_at_the_stop_ids():
    config = greedy_config([2, 7], 3, 12)
    assert config.do_sample is False and config.eos_token_id == [2, 7] and config.pad_token_id == 3
    assert config.max_new_tokens == 12 and config.repetition_penalty in (None, 1.0)  # none of the model's own
    assert greedy_config((2,), None).max_new_tokens is None  # lm-eval sets the length itself


# --- greedy generation -----------------------------------------------------------------------------------------


def test_batched_answers_equal_one_prompt_at_a_time(varied):
    model, tokenizer = varied
    texts = _texts(tokenizer)
    stops = stop_token_ids(tokenizer, CHAT_TEMPLATE)
    progress: list[int] = []
    batched = generate_answers(model, tokenizer, texts, stops, 10, batch_size=2, done=progress.append)
    assert progress == [2, 4, 5] and tokenizer.padding_side == "left"
    assert batched == [generate_answers(model, tokenizer, [t], stops, 10, batch_size=1)[0] for t in texts]
    for text, answer in zip(texts, batched, strict=True):
        ids, stopped = generate_one(model, prompt_ids(tokenizer, text), stops, tokenizer.pad_token_id, 10)
        assert answer == Answer(tokenizer.decode(ids, skip_special_tokens=True), len(ids), stopped)
    assert len({a.text for a in batched}) > 1  # the answers differ: the comparison means something


def test_an_answer_ends_before_its_first_stop_token(varied):
    model, tokenizer = varied
    text = _texts(tokenizer)[1]
    ids, stopped = generate_one(model, prompt_ids(tokenizer, text), [], tokenizer.pad_token_id, 6)
    assert len(ids) == 6 and not stopped  # no stop token: it runs to max_new_tokens
    third = ids[2]
    cut, stopped = generate_one(model, prompt_ids(tokenizer, text), [third], tokenizer.pad_token_id, 6)
    assert stopped and cut == ids[: ids.index(third)]
    [answer] = generate_answers(model, tokenizer, [text], [third], 6)
    assert answer.stopped and answer.tokens == len(cut) and answer.text == tokenizer.decode(cut, skip_special_tokens=True)
    [unstopped] = generate_answers(model, tokenizer, [text], [], 6)
    assert not unstopped.stopped and unstopped.tokens == 6


def test_no_prompts_no_answers(varied):
    model, tokenizer = varied
    progress: list[int] = []
    assert generate_answers(model, tokenizer, [], [2], 4, done=progress.append) == [] and progress == []
