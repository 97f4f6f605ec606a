"""`ftc eval RUN` for a reward model (kind = "reward"): how often it scores the held-out chosen answer above the
rejected one, base head against tuned.

Each held-out pair is rendered as training rendered it (the prompt and the answer's turns through the locked chat
template) and scored one sequence at a time, so that no padding touches the score. The metrics:
  pairwise_accuracy  share of pairs with score(chosen) > score(rejected); 0.5 is chance.
  mean_margin        mean of score(chosen) - score(rejected), in the model's own units.
"base" is the base model with the score head as the run initialised it (the project seed, before training):
what the scores would be without training. "tuned" is final/, the whole reward model a grpo or rloo spec loads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftc.compiler.build.lock import plan_hash
from ftc.runtime.heldout import held_out
from ftc.runtime.models import RunFolder, _attn, base_location, load_tokenizer, locked_chat_template, placement
from ftc.runtime.runfolder import EVAL, EVAL_FORMAT, EvalRecord, RunFolderError, read_record, write_evaluation
from ftc.templates.load_model import load_dense

CHANCE = 0.5


def _text(tokenizer, chat_template: str | None, prompt: Any, answer: Any) -> str:
    if isinstance(prompt, str):
        return prompt + answer
    return tokenizer.apply_chat_template(prompt + answer, chat_template=chat_template, tokenize=False)


def _scores(model, tokenizer, texts: list[str], device: str) -> list[float]:
    import torch

    scores = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
            scores.append(float(model(**ids).logits[0, 0]))
    return scores


def _base_scorer(run: RunFolder, place):
    """The base with the score head the run started from: the script seeds with the project seed, then loads."""
    from transformers import AutoModelForSequenceClassification, set_seed

    set_seed(run.lock.training.seed)
    where, args = base_location(run)
    return load_dense(where, place.dtype, _attn(run), args, AutoModelForSequenceClassification, num_labels=1)


def _tuned_scorer(run: RunFolder, place):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(run.final), dtype=place.dtype, use_safetensors=True)


def _row(base: float | None, tuned: float, note: str) -> dict[str, Any]:
    row: dict[str, Any] = {"tuned": round(tuned, 6), "note": note}
    if base is not None:
        row["base"] = round(base, 6)
        row["delta"] = round(tuned - base, 6)
    return row


def evaluate_reward_model(run: RunFolder, run_dir: Path, limit: int | None, step: Callable[[str], None]):
    from ftc.runtime.evaluate.compare import Evaluation

    started = time.monotonic()
    record = read_record(run_dir)
    tokenizer = load_tokenizer(run)
    chat_template, _ = locked_chat_template(run)
    step("reading held-out pairs")
    examples = held_out(run, limit if limit is not None else 10**9)
    pairs = [r.value for r in examples.records if isinstance(r.value, dict) and {"prompt", "chosen", "rejected"} <= r.value.keys()]
    if not pairs:
        raise RunFolderError(f"{examples.path} holds no held-out preference pairs to score the reward model on")
    chosen = [_text(tokenizer, chat_template, p["prompt"], p["chosen"]) for p in pairs]
    rejected = [_text(tokenizer, chat_template, p["prompt"], p["rejected"]) for p in pairs]
    place = placement(run.lock)
    sides: dict[str, tuple[float, float]] = {}
    timings: dict[str, float] = {}
    for side, load in (("base", _base_scorer), ("tuned", _tuned_scorer)):
        if side == "base" and not run.lock.evaluation.compare_base:
            continue
        step(f"scoring {len(pairs)} held-out pairs with the {side} reward model")
        began = time.monotonic()
        model = load(run, place).to(place.device).eval()
        model.config.pad_token_id = tokenizer.pad_token_id
        good, bad = _scores(model, tokenizer, chosen, place.device), _scores(model, tokenizer, rejected, place.device)
        wins = sum(g > b for g, b in zip(good, bad, strict=True)) / len(pairs)
        sides[side] = (wins, sum(g - b for g, b in zip(good, bad, strict=True)) / len(pairs))
        timings[side] = round(time.monotonic() - began, 1)
    base = sides.get("base")
    metrics = {
        "pairwise_accuracy": _row(base[0] if base else None, sides["tuned"][0], f"score(chosen) > score(rejected); chance is {CHANCE}"),
        "mean_margin": _row(base[1] if base else None, sides["tuned"][1], "mean score(chosen) - score(rejected)"),
    }
    seconds = time.monotonic() - started
    result = {
        "format_version": EVAL_FORMAT,
        "run": record.run_id or run_dir.name,
        "plan_hash": record.plan_sha256 or plan_hash(run.lock),
        "examples": len(pairs),
        "held_out": {"source": examples.source, "path": examples.path, "max_examples": limit},
        "models": {
            "base": "the base model with the score head as the run initialised it (project seed), untrained" if base else None,
            "tuned": "final/ (the whole reward model)",
        },
        "metrics": metrics,
        "notes": [f"a reward model is scored on held-out pairs; chance is {CHANCE}"],
        "seconds": {**timings, "total": round(seconds, 1)},
    }
    evaluation = EvalRecord.model_validate(result)
    path = write_evaluation(run_dir, evaluation, EVAL)
    return Evaluation(evaluation, path, True, seconds, timings)
