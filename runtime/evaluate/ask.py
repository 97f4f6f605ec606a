"""What `ftc eval` asks the models, and their answers: the held-out prompts with their references, the lm-eval
tasks, and each side (base and tuned) answering them, locally or through an endpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.runtime.evaluate import lmeval
from ftc.runtime.evaluate import metrics as m
from ftc.runtime.evaluate.endpoint import Endpoint, endpoint_answers
from ftc.runtime.evaluate.fewshot import Choice, Fitted, fit_prompts
from ftc.runtime.generate import Answer, Prompt, answers_of, greedy_config, prompt_of
from ftc.runtime.heldout import HeldOut, held_out
from ftc.runtime.models import (
    RunFolder,
    load_trained_base,
    load_tuned,
    placement,
    tuned_for_answers,
)


@dataclass(frozen=True)
class Questions:
    """What both models are asked: the held-out prompts (with their file:line) and the reference answers."""

    examples: HeldOut
    prompts: list[tuple[str, Prompt]]
    refs: list[m.Example]

    @property
    def texts(self) -> list[str]:
        return [p.text for _, p in self.prompts]


@dataclass(frozen=True)
class Decoding:
    """How every side is asked: greedy, up to max_new_tokens, stopping at the locked stop tokens."""

    tokenizer: Any
    stop_ids: list[int]
    stop_strings: list[str]
    max_new_tokens: int


@dataclass(frozen=True)
class Tasks:
    """The lm-eval tasks: the held-out one ftc writes, the spec's general ones, and which of those cannot run."""

    heldout: lmeval.HeldOutTask | None
    general: list[str]
    unavailable: dict[str, str]
    manager: Any
    limit: int | None

    @property
    def runnable(self) -> list[str]:
        return ([lmeval.HELDOUT_TASK] if self.heldout else []) + [g for g in self.general if g not in self.unavailable]


@dataclass(frozen=True)
class Side:
    """One model's answers to the questions, and its lm-eval results per task."""

    answers: list[Answer]
    lm_eval: dict[str, dict[str, Any]]
    served: dict[str, Any] | None = None  # through an endpoint: how its prompts compare with ftc's rendering
    fitted: Fitted | None = None  # the few-shot side: its prompts, and how many examples each kept


def read_questions(run: RunFolder, tokenizer, chat_template: str | None, limit: int | None) -> Questions:
    """The first `limit` held-out examples that have a prompt and an answer (none for text data)."""
    fmt = run.lock.data.format
    label_field = run.lock.data.label_field
    examples = held_out(run, limit)
    prompts: list[tuple[str, Prompt]] = []
    refs: list[m.Example] = []
    if fmt != "text":
        from ftc.compiler.data.check import label_of

        for item in examples.records:
            prompt = prompt_of(item.value, fmt, tokenizer, chat_template)
            if prompt is not None:
                prompts.append((f"{examples.path}:{item.where}", prompt))
                refs.append(m.Example(prompt.reference, label_of(item.value, fmt, label_field) if label_field else None))
    return Questions(examples, prompts, refs)


VIRTUAL_TOKENS = (
    "the tuned model's virtual tokens (prompt, P- or prefix tuning) need decoding without a cache, which lm-eval does "
    "not do (peft's cached generation repeats or loses them), and shift the logits lm-eval scores; ftc's own "
    "held-out metrics score these runs"
)


def prepare_tasks(
    run_dir: Path, general: list[str], questions: Questions, decoding: Decoding, limit: int | None, virtual_tokens: bool = False
) -> Tasks:
    """The held-out task written for lm-eval (when there are prompts), and which of the general tasks (the
    plan's evaluation.lm_eval_tasks) load here and can be scored: none when the tuned model has virtual tokens."""
    texts = questions.texts
    references = [r.reference for r in questions.refs]
    task = None
    if texts and not virtual_tokens:
        task = lmeval.write_heldout_task(run_dir, texts, references, decoding.stop_strings, decoding.max_new_tokens)
    manager = lmeval.task_manager(task, general)
    unavailable = {name: why for name in general if (why := lmeval.check_available(manager, name))}
    if virtual_tokens:
        unavailable |= dict.fromkeys(general, VIRTUAL_TOKENS)
    return Tasks(task, general, unavailable, manager, limit)


def _run_side(model, texts: list[str], decoding: Decoding, tasks: Tasks | None, step, name: str, recompute: bool = False) -> Side:
    def done(n: int) -> None:
        step(f"{name}: {n}/{len(texts)} answers")

    done(0)
    tokenizer, stop_ids = decoding.tokenizer, decoding.stop_ids
    answers = answers_of(model, tokenizer, texts, stop_ids, decoding.max_new_tokens, recompute, done) if texts else []
    results: dict[str, dict[str, Any]] = {}
    if tasks is not None and tasks.runnable:
        step(f"{name}: lm-eval {', '.join(tasks.runnable)}")
        # lm-eval generates with the model's own generation config plus its stop strings: make that config the
        # plain greedy one ftc uses, so that no sampling default or repetition penalty of the model applies.
        model.generation_config = greedy_config(stop_ids, tokenizer.pad_token_id)
        results = lmeval.score(model, tokenizer, tasks.manager, tasks.runnable, tasks.limit)
    return Side(answers, results)


def _served_side(endpoint: Endpoint, prompts: list[Prompt], decoding: Decoding, tasks: Tasks, step) -> Side:
    """The tuned side through the endpoint: ftc's client for the metrics, lm-eval's completions backend for the tasks."""
    def done(n: int) -> None:
        step(f"tuned (served): {n}/{len(prompts)} answers")

    done(0)
    tokenizer, stop_ids = decoding.tokenizer, decoding.stop_ids
    served = endpoint_answers(endpoint, prompts, tokenizer, stop_ids, decoding.max_new_tokens, done)
    results: dict[str, dict[str, Any]] = {}
    if tasks.runnable:
        step(f"tuned (served): lm-eval {', '.join(tasks.runnable)}")
        results = lmeval.score_endpoint(endpoint, tokenizer, stop_ids, tasks.manager, tasks.runnable, tasks.limit)
    facts = {
        "url": endpoint.shown,
        "model": endpoint.model,
        "api_key_env": endpoint.key_env,
        "max_model_len": endpoint.served.get("max_model_len"),
        "root": endpoint.served.get("root"),
        "prompt_ids_match": (
            "not returned by the server" if served.prompt_ids_match < 0 else f"{served.prompt_ids_match}/{len(prompts)}"
        ),
        "first_prompt_mismatch": served.first_mismatch,
        "answers_capped_by_max_model_len": served.capped,
    }
    return Side(served.answers, results, facts)


@dataclass(frozen=True)
class FewShot:
    """The few-shot baseline's examples, and the chat template its prompts are rendered with."""

    choice: Choice
    chat_template: str | None


def _few_shot_side(base, questions: Questions, decoding: Decoding, few: FewShot, step) -> Side:
    """The base model asked each question with the chosen examples before it (no lm-eval tasks: those are
    zero-shot prompts of lm-eval's own), within the model's context."""
    context = getattr(base.config, "max_position_embeddings", None)
    prompts = [p for _, p in questions.prompts]
    fitted = fit_prompts(prompts, few.choice.examples, decoding.tokenizer, few.chat_template, context, decoding.max_new_tokens)
    side = _run_side(base, [p.text for p in fitted.prompts], decoding, None, step, "few-shot")
    return Side(side.answers, {}, fitted=fitted)


def ask_models(
    run: RunFolder,
    questions: Questions,
    decoding: Decoding,
    tasks: Tasks,
    compare_base: bool,
    endpoint: Endpoint | None,
    step: Callable[[str], None],
    timings: dict[str, float],
    few_shot: FewShot | None = None,
) -> dict[str, Side | None]:
    """Each side's answers and lm-eval results: the base (when compare_base), the base with few-shot prompts
    (when `few_shot`), and the tuned model, merged in memory, loaded from final/, or asked through the endpoint.
    Seconds per side go into `timings`."""
    sides: dict[str, Side | None] = {"base": None, **({"few_shot": None} if few_shot else {}), "tuned": None}
    texts = questions.texts
    if not (texts or tasks.runnable):  # text data with no general task: nothing to ask the models
        return sides
    place = placement(run.lock)
    if endpoint is not None:  # first: a server that cannot answer is known before the base's minutes
        mark = time.monotonic()
        sides["tuned"] = _served_side(endpoint, [p for _, p in questions.prompts], decoding, tasks, step)
        timings["tuned"] = time.monotonic() - mark
    mark = time.monotonic()
    step("base: loading")
    base = load_trained_base(run, place) if (compare_base or few_shot or (run.adapter and endpoint is None)) else None
    if compare_base:
        sides["base"] = _run_side(base, texts, decoding, tasks, step, "base")
    timings["base"] = time.monotonic() - mark
    if few_shot is not None:  # before the tuned model, which may be merged into these weights
        mark = time.monotonic()
        sides["few_shot"] = _few_shot_side(base, questions, decoding, few_shot, step)
        timings["few_shot"] = time.monotonic() - mark
    if endpoint is None:
        mark = time.monotonic()
        step("tuned: loading")
        recompute = False
        if run.adapter:
            tuned, recompute = tuned_for_answers(run, base)
        else:
            del base
            tuned = load_tuned(run, place)
        sides["tuned"] = _run_side(tuned, texts, decoding, tasks, step, "tuned", recompute)
        del tuned
        timings["tuned"] = time.monotonic() - mark
    return sides
