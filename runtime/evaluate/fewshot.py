"""The few-shot baseline of `ftc eval`: the base model asked each held-out question with k training examples
before it, so that a user sees whether fine-tuning beats prompting.

The k examples are drawn by the project seed from the training records the run did not hold out
(runtime/heldout.py training_pool), among those with a prompt and an answer, leaving out any whose content
(sha256 of the record's canonical JSON) equals a held-out record's; they are the same k for every question.
They go before the question as earlier turns:
  - a conversation (chat data, or a prompt given as messages): the question's system turn, if any, first; then
    each example's turns without its system turn, ending with its answer as an assistant turn; then the question's
    turns; rendered with the locked chat template and its generation prompt, as the question alone is;
  - a plain prompt (completion, preference, unpaired data): each example's prompt and answer concatenated, one
    example after another, separated by a blank line, then the question's prompt.
When a prompt with all k examples and max_new_tokens of answer does not fit the model's context, examples are
dropped from the end of the list, one at a time, until it fits; how many prompts lost examples is recorded.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from ftc.compiler.hashing import sha256_bytes
from ftc.runtime.generate import Prompt, prompt_ids, prompt_of, render_prompt
from ftc.runtime.heldout import HeldOut, training_pool
from ftc.runtime.models import RunFolder

SEPARATOR = "\n\n"  # between examples in a plain-text few-shot prompt


def content_hash(value: Any) -> str:
    """A record's content, hashed as canonical JSON (sorted keys, no spaces): equal records hash equal."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return sha256_bytes(text.encode("utf-8"))


@dataclass(frozen=True)
class Example:
    """One training example in the few-shot prompts: where it is, its content hash, and its prompt and answer."""

    index: int  # position among the training file's records (0-based)
    source: str  # file:line
    sha256: str
    prompt: Prompt


@dataclass(frozen=True)
class Choice:
    """The examples chosen, and how the choice was made."""

    k: int
    seed: int
    examples: list[Example]
    pool: int  # training records with a prompt and an answer that could be chosen
    same_as_held_out: int  # training records left out because a held-out record has the same content

    def record(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "seed": self.seed,
            "chosen": len(self.examples),
            "pool": self.pool,
            "left_out_same_as_held_out": self.same_as_held_out,
            "examples": [{"index": e.index, "source": e.source, "sha256": e.sha256} for e in self.examples],
        }


def choose_examples(run: RunFolder, held: HeldOut, k: int, seed: int, tokenizer, chat_template: str | None) -> Choice:
    """k training examples, drawn by `seed`, never one whose content is a held-out record's."""
    fmt = run.lock.data.format
    rel, records = training_pool(run, held)
    held_hashes = {content_hash(r.value) for r in held.records}
    lines = {r.line: i for i, r in enumerate(records)}
    candidates: list[Example] = []
    same = 0
    for record in records:
        digest = content_hash(record.value)
        if digest in held_hashes:
            same += 1
            continue
        prompt = prompt_of(record.value, fmt, tokenizer, chat_template) if fmt != "text" else None
        if prompt is not None:
            candidates.append(Example(lines[record.line], f"{rel}:{record.where}", digest, prompt))
    picked = sorted(random.Random(seed).sample(range(len(candidates)), min(k, len(candidates))))
    examples = [candidates[i] for i in picked]
    assert not {e.sha256 for e in examples} & held_hashes, "a few-shot example is a held-out record"
    return Choice(k, seed, examples, len(candidates), same)


def _turns(example: Example) -> list[dict[str, Any]]:
    """An example as conversation turns: its own turns (no system turn), then its answer."""
    p = example.prompt
    asked = [m for m in p.messages if m.get("role") != "system"] if p.messages else [{"role": "user", "content": p.text}]
    return [*asked, {"role": "assistant", "content": p.reference}]


def _plain(example: Example) -> str:
    p = example.prompt
    return (p.text if p.messages is None else p.shown) + p.reference


def with_examples(question: Prompt, examples: list[Example], tokenizer, chat_template: str | None) -> Prompt:
    """The question with `examples` before it, as the module's docstring says."""
    if question.messages is None:
        text = "".join(_plain(e) + SEPARATOR for e in examples) + question.text
        return Prompt(question.shown, text, question.reference)
    system = [m for m in question.messages[:1] if m.get("role") == "system"]
    rest = question.messages[len(system):]
    messages = system + [turn for e in examples for turn in _turns(e)] + rest
    return Prompt(question.shown, render_prompt(tokenizer, chat_template, messages), question.reference, messages)


@dataclass(frozen=True)
class Fitted:
    """The few-shot prompts, and how many examples each kept within the context."""

    prompts: list[Prompt]
    kept: list[int]
    context: int | None
    max_new_tokens: int

    def record(self, chosen: int) -> dict[str, Any]:
        short = [n for n in self.kept if n < chosen]
        return {
            "context_tokens": self.context,
            "prompts_with_fewer_examples": len(short),
            "fewest_examples_in_a_prompt": min(self.kept, default=chosen),
        }

    def note(self, chosen: int) -> str | None:
        short = sum(n < chosen for n in self.kept)
        if not short:
            return None
        return (
            f"{short} of {len(self.kept)} few-shot prompt(s) did not fit the model's context ({self.context} tokens, "
            f"with {self.max_new_tokens} for the answer) with all {chosen} examples: examples were dropped from the end "
            f"of the list until each fit (the fewest left: {min(self.kept)})"
        )


def fit_prompts(
    questions: list[Prompt], examples: list[Example], tokenizer, chat_template: str | None, context: int | None, max_new_tokens: int
) -> Fitted:
    """Each question with as many of the examples (from the first) as fit in `context` tokens with room for
    max_new_tokens; every example when the context is unknown."""
    prompts, kept = [], []
    for question in questions:
        n = len(examples)
        prompt = with_examples(question, examples, tokenizer, chat_template)
        while context is not None and n > 0 and len(prompt_ids(tokenizer, prompt.text)) + max_new_tokens > context:
            n -= 1
            prompt = with_examples(question, examples[:n], tokenizer, chat_template)
        prompts.append(prompt)
        kept.append(n)
    return Fitted(prompts, kept, context, max_new_tokens)
