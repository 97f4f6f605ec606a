"""Base versus tuned: both models' greedy answers to the first held-out examples.

`ftc run` prints them when a run completes (print_comparison); compare_answers also keeps them in
RUN/samples.json. The prompt is what the model saw before the answer it was trained on: for chat data the
conversation up to its last assistant turn, for completion, preference and unpaired data the prompt. The
reference is that last assistant turn, the completion, or the chosen answer; of unpaired data only the desirable
examples are shown, since an undesirable completion is no reference (runtime/generate.py prompt_of). Both models get the prompt through the locked
chat template with the generation prompt (a plain-string prompt goes in as it is, as it did in training),
decode greedily, and stop at the EOS or the template's end-of-turn token (runtime/generate.py).

The base answers come from the weights the run trained against (for QLoRA: its 4-bit base, dequantized); the
tuned answers from the same weights with the adapter merged in memory (what `ftc merge` writes and verifies),
or, for full fine-tuning, from final/. Text data has no prompt/answer split, so it gets no samples.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

from ftc.compiler.atomic import write_atomic
from ftc.runtime.generate import answers_of, prompt_of, stop_token_ids
from ftc.runtime.heldout import held_out
from ftc.runtime.models import (
    RunFolder,
    load_tokenizer,
    load_trained_base,
    load_tuned,
    locked_chat_template,
    open_run,
    placement,
    tuned_for_answers,
)
from ftc.runtime.runfolder import SAMPLES

DEFAULT_MAX_NEW_TOKENS = 128  # room for a whole answer of the quickstart task (about 60 tokens)
SHOWN_CHARS = 400  # per text in the terminal; samples.json keeps everything
SHOWN_LINES = 8
SIDE_BY_SIDE_WIDTH = 110  # narrower terminals get the answers one under another


def _generate(
    model, tokenizer, texts: list[str], stop_ids: list[int], max_new_tokens: int, recompute: bool = False
) -> list[str]:
    return [a.text for a in answers_of(model, tokenizer, texts, stop_ids, max_new_tokens, recompute)]


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
    recompute = False
    if run.adapter:
        tuned, recompute = tuned_for_answers(run, base)
    else:
        del base
        gc.collect()
        tuned = load_tuned(run, place)
    return base_answers, _generate(tuned, tokenizer, texts, stop_ids, max_new_tokens, recompute)


def compare_answers(
    run_dir: Path, n: int = 3, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
) -> list[dict[str, str]]:
    """Rows of prompt, reference, base and tuned answers (and the example's file:line) for the first n
    held-out examples; also written to RUN/samples.json. Empty for text data."""
    run = open_run(run_dir)
    tokenizer = load_tokenizer(run)
    chat_template, _ = locked_chat_template(run)
    fmt = run.lock.data.format
    limit = n
    while True:  # read on past the examples without a reference (unpaired data's undesirable ones)
        examples = held_out(run, limit)
        prompts = []
        for record in examples.records:
            prompt = prompt_of(record.value, fmt, tokenizer, chat_template)
            if prompt is not None:
                prompts.append((f"{examples.path}:{record.where}", prompt))
        if len(prompts) >= n or len(examples.records) < limit:
            break
        limit *= 2
    prompts = prompts[:n]
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
