"""Base versus tuned: both models' greedy answers to the first held-out examples.

`ftc run` prints them when a run completes (print_comparison); compare_answers also keeps them in
RUN/samples.json. The prompt is what the model saw before the answer it was trained on: for chat data the
conversation up to its last assistant turn, for completion and preference data the prompt. The reference is
that last assistant turn, the completion, or the chosen answer. Both models get the prompt through the locked
chat template with the generation prompt (a plain-string prompt goes in as it is, as it did in training),
decode greedily, and stop at the EOS or the template's end-of-turn token.

The base answers come from the weights the run trained against (for QLoRA: its 4-bit base, dequantized); the
tuned answers from the same weights with the adapter merged in memory (what `ftc merge` writes and verifies),
or, for full fine-tuning, from final/. Text data has no prompt/answer split, so it gets no samples.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler.build.lock import write_atomic

from ftc.runtime.heldout import held_out
from ftc.runtime.merge import stop_token_ids
from ftc.runtime.models import (
    RunFolder,
    attach_adapter,
    load_tokenizer,
    load_trained_base,
    load_tuned,
    locked_chat_template,
    open_run,
    placement,
)

SAMPLES = "samples.json"
DEFAULT_MAX_NEW_TOKENS = 128  # room for a whole answer of the quickstart task (about 60 tokens)
SHOWN_CHARS = 400  # per text in the terminal; samples.json keeps everything
SHOWN_LINES = 8
SIDE_BY_SIDE_WIDTH = 110  # narrower terminals get the answers one under another
BATCH_SIZE = 16  # prompts generated together (left-padded); see generate_answers


@dataclass(frozen=True)
class Prompt:
    shown: (
        str  # what a reader sees: the last turn before the answer, or the prompt string
    )
    text: str  # what the models are given: the rendered conversation with the generation prompt
    reference: str
    messages: list[dict[str, Any]] | None = None  # what a chat client sends; None: the prompt is a plain string


def _content(value: Any) -> str:
    """A string, or the content of the last message of a list of messages."""
    if isinstance(value, str):
        return value
    return value[-1]["content"] if value else ""


def _render(
    tokenizer, chat_template: str | None, messages: list[dict[str, Any]]
) -> str:
    return tokenizer.apply_chat_template(
        messages,
        chat_template=chat_template,
        add_generation_prompt=True,
        tokenize=False,
    )


def prompt_of(
    value: dict[str, Any], data_format: str, tokenizer, chat_template: str | None
) -> Prompt | None:
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
            _render(tokenizer, chat_template, messages[:last]),
            messages[last]["content"],
            messages[:last],
        )
    if data_format in ("completion", "preference"):
        prompt = value["prompt"]
        answer = value["completion" if data_format == "completion" else "chosen"]
        text = (
            prompt
            if isinstance(prompt, str)
            else _render(tokenizer, chat_template, prompt)
        )
        return Prompt(_content(prompt), text, _content(answer), None if isinstance(prompt, str) else prompt)
    return None


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
    from transformers import GenerationConfig

    # Pad on the left: generation continues every prompt from its own last token.
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
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
            cut = next((k for k, token in enumerate(ids) if token in stop_ids), None)
            kept = ids if cut is None else ids[:cut]
            answers[i] = Answer(tokenizer.decode(kept, skip_special_tokens=True), len(kept), cut is not None)
        done(len(answers))
    return [answers[i] for i in range(len(texts))]


def _generate(
    model, tokenizer, texts: list[str], stop_ids: list[int], max_new_tokens: int
) -> list[str]:
    return [a.text for a in generate_answers(model, tokenizer, texts, stop_ids, max_new_tokens)]


def _answers(
    run: RunFolder,
    tokenizer,
    texts: list[str],
    stop_ids: list[int],
    max_new_tokens: int,
) -> tuple[list[str], list[str]]:
    place = placement(run.lock)
    base = load_trained_base(run, place)
    base_answers = _generate(base, tokenizer, texts, stop_ids, max_new_tokens)
    if run.adapter:
        # Merged in memory: the weights merged/ holds, whose logits `ftc merge` checks against base + adapter.
        # A merged model generates several times faster on a CPU than one with the adapter's layers attached.
        tuned = attach_adapter(run, base).merge_and_unload()
    else:
        del base
        gc.collect()
        tuned = load_tuned(run, place)
    return base_answers, _generate(tuned, tokenizer, texts, stop_ids, max_new_tokens)


def compare_answers(
    run_dir: Path, n: int = 3, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
) -> list[dict[str, str]]:
    """Rows of prompt, reference, base and tuned answers (and the example's file:line) for the first n
    held-out examples; also written to RUN/samples.json. Empty for text data."""
    run = open_run(run_dir)
    tokenizer = load_tokenizer(run)
    chat_template, _ = locked_chat_template(run)
    fmt = run.lock["data"]["format"]
    examples = held_out(run, n)
    prompts = []
    for record in examples.records:
        prompt = prompt_of(record.value, fmt, tokenizer, chat_template)
        if prompt is not None:
            prompts.append((f"{examples.path}:{record.where}", prompt))
    rows: list[dict[str, str]] = []
    if prompts:
        texts = [p.text for _, p in prompts]
        base, tuned = _answers(
            run,
            tokenizer,
            texts,
            stop_token_ids(tokenizer, chat_template),
            max_new_tokens,
        )
        rows = [
            {
                "source": source,
                "prompt": p.shown,
                "reference": p.reference,
                "base": b,
                "tuned": t,
            }
            for (source, p), b, t in zip(prompts, base, tuned, strict=True)
        ]
    record = {
        "examples_from": examples.source,
        "max_new_tokens": max_new_tokens,
        "decoding": "greedy",
        "samples": rows,
    }
    write_atomic(
        run_dir / SAMPLES, json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    )
    return rows


def _shorten(text: str) -> str:
    text = text.strip()
    lines = text.splitlines() or [""]
    cut = "\n".join(lines[:SHOWN_LINES])
    if len(cut) > SHOWN_CHARS:
        cut = cut[:SHOWN_CHARS].rstrip()
    return cut + " …" if cut != text else cut


def _cell(text: str):
    from rich.text import Text

    if not text.strip():
        return Text("(blank)" if text else "(nothing)", style="dim")
    return Text(_shorten(text))  # a Text, so that model output is never read as markup


def print_comparison(console, rows: list[dict[str, str]]) -> None:
    """Each example as a table: the prompt, then the reference, base and tuned answers side by side (one under
    another on a narrow terminal). Long texts are cut to a few lines; RUN/samples.json has them whole."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not rows:
        console.print(
            "no held-out examples with a prompt and an answer to compare", markup=False
        )
        return
    for i, row in enumerate(rows, 1):
        console.print(Text(f"example {i} ({row['source']})", style="bold"))
        table = Table(box=box.ROUNDED, show_lines=True, expand=True)
        if console.width >= SIDE_BY_SIDE_WIDTH:
            console.print(Text("prompt: ", style="bold") + _cell(row["prompt"]))
            for name in ("reference", "base", "tuned"):
                table.add_column(name, ratio=1, overflow="fold")
            table.add_row(
                *(_cell(row[name]) for name in ("reference", "base", "tuned"))
            )
        else:
            table.show_header = False
            table.add_column("", style="bold", no_wrap=True)
            table.add_column("", ratio=1, overflow="fold")
            for name in ("prompt", "reference", "base", "tuned"):
                table.add_row(name, _cell(row[name]))
        console.print(table)
