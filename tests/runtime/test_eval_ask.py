"""What `ftc eval` asks and who answers, on a real 2-step LoRA run of the tiny Llama: the held-out questions,
the lm-eval tasks prepared for them, and both sides' answers, which are the shared generation module's answers
from the base and from the base with the adapter merged in memory."""

from __future__ import annotations

import pytest
from tiny_runs import trained_run

from ftc.runtime.evaluate import lmeval
from ftc.runtime.evaluate.ask import Decoding, Questions, Tasks, ask_models, prepare_tasks, read_questions
from ftc.runtime.generate import generate_answers, stop_token_ids
from ftc.runtime.models import (
    attach_adapter,
    load_tokenizer,
    load_trained_base,
    locked_chat_template,
    open_run,
    placement,
)


@pytest.fixture(scope="module")
def asked(tmp_path_factory, tiny_model):
    """(run, tokenizer, questions, decoding) for the first 2 held-out examples."""
    run = open_run(trained_run(tmp_path_factory, tiny_model, "lora"))
    tokenizer = load_tokenizer(run)
    template, _ = locked_chat_template(run)
    stops = stop_token_ids(tokenizer, template)
    decoding = Decoding(tokenizer, stops, [tokenizer.decode([i]) for i in stops], 6)
    return run, tokenizer, read_questions(run, tokenizer, template, 2), decoding


def test_the_questions_are_the_held_out_prompts_with_their_references(asked):
    _, _, questions, _ = asked
    assert [source for source, _ in questions.prompts] == ["data/val.jsonl:1", "data/val.jsonl:2"]
    assert [r.reference for r in questions.refs] == [p.reference for _, p in questions.prompts]
    assert questions.refs[0].reference.startswith('{"category"') and questions.examples.source == "validation"
    assert all(text.endswith("<|im_start|>assistant\n") for text in questions.texts)


def test_the_held_out_task_is_prepared_for_lm_eval(asked, tmp_path):
    _, _, questions, decoding = asked
    tasks = prepare_tasks(tmp_path, [], questions, decoding, 2)
    assert tasks.runnable == [lmeval.HELDOUT_TASK] and tasks.unavailable == {} and tasks.limit == 2
    assert tasks.heldout.prompts == questions.texts and tasks.heldout.stop_strings == decoding.stop_strings
    assert tasks.heldout.folder.is_relative_to(tmp_path) and (tasks.heldout.folder / f"{lmeval.HELDOUT_TASK}.yaml").is_file()
    empty = prepare_tasks(tmp_path / "text", [], Questions(questions.examples, [], []), decoding, None)
    assert empty.heldout is None and empty.runnable == []


def test_both_sides_answer_as_the_generation_module_does(asked):
    run, tokenizer, questions, decoding = asked
    no_lm_eval = Tasks(None, [], {}, None, 2)
    steps: list[str] = []
    timings: dict[str, float] = {}
    sides = ask_models(run, questions, decoding, no_lm_eval, True, None, steps.append, timings)
    assert set(timings) == {"base", "tuned"} and "base: loading" in steps and "tuned: 2/2 answers" in steps
    base = load_trained_base(run, placement(run.lock))
    expected_base = generate_answers(base, tokenizer, questions.texts, decoding.stop_ids, 6)
    tuned = attach_adapter(run, base).merge_and_unload()
    expected_tuned = generate_answers(tuned, tokenizer, questions.texts, decoding.stop_ids, 6)
    assert sides["base"].answers == expected_base and sides["tuned"].answers == expected_tuned
    assert sides["base"].lm_eval == {} and sides["tuned"].served is None
    tuned_only = ask_models(run, questions, decoding, no_lm_eval, False, None, lambda _: None, {})
    assert tuned_only["base"] is None and tuned_only["tuned"].answers == expected_tuned


def test_nothing_to_ask_asks_no_model(asked):
    run, _, questions, decoding = asked
    nothing = Questions(questions.examples, [], [])
    timings: dict[str, float] = {}
    assert ask_models(run, nothing, decoding, Tasks(None, [], {}, None, None), True, None, lambda _: None, timings) == {"base": None, "tuned": None}
    assert timings == {}
