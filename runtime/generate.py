"""Greedy generation, as every stage that asks a model for answers does it: `ftc run`'s samples, `ftc eval`
(locally and through an endpoint), `ftc merge`'s generation config, and `ftc serve`'s parity gate.

  - The prompt: a record's prompt (the conversation before its last assistant turn, or its prompt field; of
    unpaired data, only the desirable examples, whose completion is the reference answer),
    rendered with the locked chat template and its generation prompt; a plain-string prompt goes in as it is,
    as it did in training (prompt_of, render_prompt). Its token ids are the rendered text's, with no special
    tokens added: the template already wrote them, and vLLM's chat endpoint tokenizes the same way (prompt_ids).
  - Where an answer stops: at the tokenizer's EOS or the template's end-of-turn token(s) (stop_token_ids). An
    answer is kept up to, and without, the first of them (cut_at_stop).
  - How: greedy (do_sample False, the model's own sampling defaults and repetition penalty left out), with the
    stop ids as eos_token_id (greedy_config); locally in left-padded batches of similar length
    (generate_answers), or one prompt at a time with no padding at all (generate_one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ftc.templates import prepare

BATCH_SIZE = 16  # prompts generated together (left-padded); see generate_answers
PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


# --- the prompt ------------------------------------------------------------------------------------------


def render_prompt(tokenizer, chat_template: str | None, messages: list[dict[str, Any]]) -> str:
    """A conversation as the model is given it: rendered with the chat template and its generation prompt."""
    return tokenizer.apply_chat_template(
        messages,
        chat_template=chat_template,
        add_generation_prompt=True,
        tokenize=False,
    )


def prompt_ids(tokenizer, text: str) -> list[int]:
    """A rendered prompt's token ids: no special tokens added (the template wrote them), as vLLM's chat endpoint."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class Prompt:
    shown: str  # what a reader sees: the last turn before the answer, or the prompt string
    text: str  # what the models are given: the rendered conversation with the generation prompt
    reference: str
    messages: list[dict[str, Any]] | None = None  # what a chat client sends; None: the prompt is a plain string


def _content(value: Any) -> str:
    """A string, or the content of the last message of a list of messages."""
    if isinstance(value, str):
        return value
    return value[-1]["content"] if value else ""


def prompt_of(value: dict[str, Any], data_format: str, tokenizer, chat_template: str | None) -> Prompt | None:
    """The prompt and reference answer of one record; None when it has no answer to compare against."""
    if data_format == "chat":
        messages = value["messages"]
        last = max(
            (i for i, m in enumerate(messages) if m["role"] == "assistant"),
            default=None,
        )
        if not last:  # no assistant turn, or nothing before it
            return None
        return Prompt(
            _content(messages[:last]),
            render_prompt(tokenizer, chat_template, messages[:last]),
            messages[last]["content"],
            messages[:last],
        )
    if data_format == "unpaired" and value.get("label") is not True:
        # An undesirable completion is what the model should not say: no reference to score an answer against.
        # Its prompt is left out rather than scored against nothing; the desirable examples are the references.
        return None
    if data_format in ("completion", "preference", "unpaired"):
        prompt = value["prompt"]
        answer = value["chosen" if data_format == "preference" else "completion"]
        text = prompt if isinstance(prompt, str) else render_prompt(tokenizer, chat_template, prompt)
        return Prompt(_content(prompt), text, _content(answer), None if isinstance(prompt, str) else prompt)
    return None


# --- where an answer stops -------------------------------------------------------------------------------


def _special_ids(tokenizer) -> set[int]:
    added = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return set(tokenizer.all_special_ids) | added


def end_of_turn_ids(tokenizer, chat_template: str | None) -> list[int]:
    """The special tokens the template puts after an assistant's answer (<|im_end|>, <|eot_id|>, ...): those in
    the trained span of a rendered conversation that follow the answer's text."""
    if chat_template is None:
        return []
    ids, mask = prepare.tokenize_messages(tokenizer, chat_template, PROBE)
    span = [i for i, m in zip(ids, mask, strict=True) if m]
    answer = PROBE[-1]["content"]
    end = next(
        (k for k in range(len(span) + 1) if answer in tokenizer.decode(span[:k])),
        len(span),
    )
    special = _special_ids(tokenizer)
    found: list[int] = []
    for token in span[end:]:
        if token in special and token not in found:
            found.append(token)
    return found


def stop_token_ids(tokenizer, chat_template: str | None) -> list[int]:
    """The tokenizer's EOS, then the template's end-of-turn token(s): where generation must stop."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return ids + [i for i in end_of_turn_ids(tokenizer, chat_template) if i not in ids]


def cut_at_stop(ids: list[int], stop_ids: Sequence[int]) -> tuple[list[int], bool]:
    """The answer up to (without) the first stop token, and whether one came (False: it ran to its limit)."""
    for k, token in enumerate(ids):
        if token in stop_ids:
            return ids[:k], True
    return ids, False


# --- greedy generation -----------------------------------------------------------------------------------


def greedy_config(stop_ids: Sequence[int], pad_id: int | None, max_new_tokens: int | None = None):
    """transformers' GenerationConfig for ftc's decoding: greedy, stopping at the stop ids; nothing else of the
    model's own generation config applies. Without max_new_tokens, the caller (lm-eval) sets the length."""
    from transformers import GenerationConfig

    length = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
    return GenerationConfig(**length, do_sample=False, eos_token_id=list(stop_ids), pad_token_id=pad_id)


@dataclass(frozen=True)
class Answer:
    text: str
    tokens: int  # generated tokens before the stop token (all of them when it never came)
    stopped: bool  # False: it ran to max_new_tokens


def generate_answers(
    model,
    tokenizer,
    texts: list[str],
    stop_ids: list[int],
    max_new_tokens: int,
    batch_size: int = BATCH_SIZE,
    done: Callable[[int], None] = lambda n: None,
) -> list[Answer]:
    """Greedy answers to already rendered prompts, in batches of similar length, padded on the left (measured on
    the quickstart: the same answers, token for token, as one prompt at a time, 3 to 4 times faster on a CPU).
    Each answer ends before the first stop token; the decoded text leaves out special tokens. `done` hears how
    many answers are ready after each batch."""
    import torch

    # Pad on the left: generation continues every prompt from its own last token.
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    config = greedy_config(stop_ids, tokenizer.pad_token_id, max_new_tokens)
    lengths = [len(prompt_ids(tokenizer, t)) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # similar lengths share a batch: less padding
    answers: dict[int, Answer] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(device)
        with torch.inference_mode():
            output = model.generate(**batch, generation_config=config)
        for i, ids in zip(chunk, output[:, batch["input_ids"].shape[1] :].tolist(), strict=True):
            kept, stopped = cut_at_stop(ids, stop_ids)
            answers[i] = Answer(tokenizer.decode(kept, skip_special_tokens=True), len(kept), stopped)
        done(len(answers))
    return [answers[i] for i in range(len(texts))]


def generate_one(
    model, ids: list[int], stop_ids: list[int], pad_id: int | None, max_new_tokens: int
) -> tuple[list[int], bool]:
    """One prompt's greedy answer from its token ids, with no padding to perturb it: the answer's ids up to
    (without) the first stop token, and whether a stop token came."""
    import torch

    device = next(model.parameters()).device
    config = greedy_config(stop_ids, pad_id, max_new_tokens)
    input_ids = torch.tensor([ids], device=device)
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
    return cut_at_stop(output[0, len(ids) :].tolist(), stop_ids)


def generate_with_virtual_tokens(
    model, ids: list[int], stop_ids: list[int], pad_id: int | None, max_new_tokens: int
) -> tuple[list[int], bool]:
    """One prompt's greedy answer from a base with a virtual-token adapter attached (prompt, P- or prefix tuning),
    computed as the model trained: each token from a forward pass of the adapted model over the whole sequence so
    far, with no KV cache (quadratic in the answer's length). peft 0.21's own cached generation is wrong under
    transformers 5.25: it looks for the cache under "past_key_values", which transformers now calls "cache", so
    prompt and P-tuning get their virtual tokens again at every step and prefix tuning loses its prefix (its
    answers equal the base's)."""
    import torch

    device = next(model.parameters()).device
    sequence = list(ids)
    answer: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            input_ids = torch.tensor([sequence], device=device)
            logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
            token = int(logits[0, -1].argmax())
            if token in stop_ids:
                return answer, True
            answer.append(token)
            sequence.append(token)
    return answer, False


def answers_of(
    model,
    tokenizer,
    texts: list[str],
    stop_ids: list[int],
    max_new_tokens: int,
    recompute: bool = False,
    done: Callable[[int], None] = lambda n: None,
) -> list[Answer]:
    """Greedy answers to rendered prompts: in padded batches (generate_answers), or, with `recompute` (a
    virtual-token adapter attached), one prompt at a time through generate_with_virtual_tokens."""
    if not recompute:
        return generate_answers(model, tokenizer, texts, stop_ids, max_new_tokens, BATCH_SIZE, done)
    answers = []
    for text in texts:
        ids, stopped = generate_with_virtual_tokens(model, prompt_ids(tokenizer, text), stop_ids, tokenizer.pad_token_id, max_new_tokens)
        answers.append(Answer(tokenizer.decode(ids, skip_special_tokens=True), len(ids), stopped))
        done(len(answers))
    return answers
