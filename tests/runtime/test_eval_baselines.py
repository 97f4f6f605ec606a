"""Prompting baselines in `ftc eval`: zero-shot (the base as prompted) and few-shot (the base with training
examples before each question) beside the tuned model, gates on them, and the verdict when fine-tuning is not
paying for itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from tiny_runs import trained_run

from ftc.cli.main import main
from ftc.compiler.spec.evaluation import Evaluation as EvaluationSpec
from ftc.compiler.build.lock import LOCK_NAME
from ftc.runtime.evaluate import baselines as bl
from ftc.runtime.evaluate.compare import EVAL, Evaluation, print_evaluation
from ftc.runtime.evaluate.diagnose import Diagnosis
from ftc.runtime.evaluate.fewshot import choose_examples, content_hash, fit_prompts, with_examples
from ftc.runtime.evaluate.scores import check_gates, gate_scores
from ftc.runtime.generate import Prompt, prompt_ids
from ftc.runtime.heldout import held_out
from ftc.runtime.models import load_tokenizer, locked_chat_template, open_run
from ftc.runtime.runfolder import EvalRecord

# --- the verdict ----------------------------------------------------------------------------------------------


def test_the_verdict_when_few_shot_comes_within_the_margin():
    row = {"base": 0.30, "few_shot": 0.79, "tuned": 0.80, "note": None}
    finding, why = bl.verdict("exact_match", row, ("zero_shot", "few_shot"), 5, 0.02)
    assert why is None and finding.finding == "not_paying_for_itself"
    assert finding.evidence.startswith(
        "fine-tuning is not paying for itself on this task: few-shot prompting (k=5) scores 0.7900 against the tuned "
        "model's 0.8000 on exact_match"
    )
    assert "keep prompting" in finding.remedy and "add training data" in finding.remedy
    # a baseline above the tuned model is within the margin too
    finding, _ = bl.verdict("exact_match", {"base": 0.9, "tuned": 0.5}, ("zero_shot",), 5, 0.02)
    assert "zero-shot prompting scores 0.9000 against the tuned model's 0.5000" in finding.evidence


def test_no_verdict_when_the_tuned_model_is_clearly_better():
    row = {"base": 0.30, "few_shot": 0.70, "tuned": 0.80, "note": None}
    assert bl.verdict("exact_match", row, ("zero_shot", "few_shot"), 5, 0.02) == (None, None)
    # only the baselines asked for count: few_shot within the margin, but only zero_shot was asked
    assert bl.verdict("exact_match", {"base": 0.1, "few_shot": 0.8, "tuned": 0.8}, ("zero_shot",), 5, 0.02) == (None, None)


def test_the_verdict_says_why_it_cannot_be_checked():
    # a saturated headline (every answer valid JSON, from the quickstart) cannot tell tuned from few-shot
    finding, why = bl.verdict("json_valid", {"base": 0.0, "few_shot": 1.0, "tuned": 1.0}, ("zero_shot", "few_shot"), 5, 0.02)
    assert finding is None and "cannot tell them apart; set evaluation.headline" in why
    assert "mean_length" in bl.verdict(EvaluationSpec(metrics=["mean_length"]).headline_metric(), None, ("few_shot",), 5, 0.02)[1]
    assert EvaluationSpec(metrics=["mean_length", "rouge_l", "exact_match"]).headline_metric() == "rouge_l"
    # repetition: lower is better, so a baseline that repeats itself no more than the tuned model is as good
    finding, _ = bl.verdict("repetition", {"base": 0.11, "tuned": 0.10}, ("zero_shot",), 5, 0.02)
    assert finding is not None and "'tuned.repetition <= zero_shot.repetition - 0.02'" in finding.remedy
    assert bl.verdict("repetition", {"base": 0.30, "tuned": 0.10}, ("zero_shot",), 5, 0.02) == (None, None)
    assert "no baseline" in bl.verdict("exact_match", {"base": None, "few_shot": None, "tuned": 0.5}, ("few_shot",), 5, 0.02)[1]


def test_record_puts_the_verdict_into_the_diagnosis():
    asked = bl.Baselines(("zero_shot",), 5, 0.05, "command line")
    diagnosis = Diagnosis([], [])
    out, notes = bl.record(asked, "accuracy", {"accuracy": {"base": 0.6, "tuned": 0.62}}, None, None, diagnosis)
    assert [f.finding for f in diagnosis.findings] == ["not_paying_for_itself"] and notes == []
    assert out["headline_metric"] == "accuracy" and out["given_by"] == "command line" and out["zero_shot"]["column"] == "base"
    assert out["verdict"].startswith("fine-tuning is not paying for itself")
    diagnosis = Diagnosis([], [])
    out, _ = bl.record(asked, "accuracy", {"accuracy": {"base": 0.2, "tuned": 0.62}}, None, None, diagnosis)
    assert diagnosis.findings == [] and out["verdict"] == "the tuned model beats every baseline on accuracy by more than 0.05"
    assert bl.record(bl.Baselines((), 5, 0.02, "spec"), "accuracy", {}, None, None, diagnosis) == (None, [])


def test_baseline_names_from_the_command_line():
    assert bl.parse_names("zero_shot, few_shot") == ("zero_shot", "few_shot")
    assert bl.parse_names("") == ()
    with pytest.raises(ValueError, match='did you mean "few_shot"'):
        bl.parse_names("fewshot")
    with pytest.raises(ValueError, match="listed twice"):
        bl.parse_names("few_shot,few_shot")


# --- gates ----------------------------------------------------------------------------------------------------


def test_gates_read_the_baselines():
    rows = {"accuracy": {"base": 0.5, "few_shot": 0.7, "tuned": 0.8, "note": None}}
    scores = gate_scores(rows, {})
    results = check_gates(
        ["tuned.accuracy >= few_shot.accuracy + 0.05", "tuned.accuracy >= few_shot.accuracy + 0.2",
         "tuned.accuracy > zero_shot.accuracy", "few_shot.accuracy >= zero_shot.accuracy"],
        scores,
        {},
    )
    assert [r["holds"] for r in results] == [True, False, True, True]
    assert results[0]["left"] == 0.8 and results[0]["right"] == pytest.approx(0.75)
    assert results[2]["right"] == 0.5  # zero_shot reads the base's numbers
    # without the few-shot column, a gate on it says why it has no number
    missing = check_gates(["tuned.accuracy >= few_shot.accuracy"], gate_scores({"accuracy": {"base": 0.5, "tuned": 0.8}}, {}),
                          {"few_shot.accuracy": "the few_shot baseline was not evaluated"})
    assert not missing[0]["holds"] and "few_shot.accuracy: the few_shot baseline was not evaluated" in missing[0]["error"]


# --- the command line -----------------------------------------------------------------------------------------


def test_bad_baselines_on_the_command_line_are_usage_errors(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--baselines", "zero_shot,one_shot"]) == 2
    assert "unknown baseline 'one_shot'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--few-shot-k", "0"]) == 2
    assert main(["eval", str(tmp_path), "--few-shot-k", "65"]) == 2


# --- on a tiny run --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory, tiny_model):
    return trained_run(tmp_path_factory, tiny_model, "lora")


def _copy_run(run_dir: Path, name: str, evaluation: dict) -> Path:
    copy = run_dir.parent / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy)
    lock = json.loads((copy / LOCK_NAME).read_text())
    lock["evaluation"].update(evaluation)
    (copy / LOCK_NAME).write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return copy


def test_examples_come_from_train_only_and_follow_the_seed(tiny_lora):
    run = open_run(tiny_lora)
    tokenizer = load_tokenizer(run)
    template, _ = locked_chat_template(run)
    held = held_out(run, None)
    first = choose_examples(run, held, 3, 3, tokenizer, template)
    again = choose_examples(run, held, 3, 3, tokenizer, template)
    assert first.record() == again.record() and len(first.examples) == 3
    assert all(e.source.startswith("data/train.jsonl:") for e in first.examples)
    assert not {e.sha256 for e in first.examples} & {content_hash(r.value) for r in held.records}
    others = {tuple(e.index for e in choose_examples(run, held, 3, seed, tokenizer, template).examples) for seed in range(6)}
    assert len(others) > 1  # the seed chooses
    # more than the pool holds: all of them, once each
    everything = choose_examples(run, held, 64, 3, tokenizer, template)
    assert len(everything.examples) == everything.pool == 8


def test_few_shot_prompts_put_examples_before_the_question_and_drop_what_does_not_fit(tiny_lora):
    run = open_run(tiny_lora)
    tokenizer = load_tokenizer(run)
    template, _ = locked_chat_template(run)
    held = held_out(run, 2)
    choice = choose_examples(run, held, 3, 3, tokenizer, template)
    question = Prompt("hi", "", "ref", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    prompt = with_examples(question, choice.examples, tokenizer, template)
    roles = [m["role"] for m in prompt.messages]
    assert roles[0] == "system" and roles.count("system") == 1 and roles[-1] == "user"
    assert roles.count("assistant") == 3 and prompt.messages[-1]["content"] == "hi"
    assert choice.examples[0].prompt.reference in prompt.text
    plain = with_examples(Prompt("q", "Q:", "a"), choice.examples, tokenizer, template)
    assert plain.text.endswith("\n\nQ:") and plain.text.count("\n\n") >= 3
    # a context that holds the question with one example but not three
    one = len(prompt_ids(tokenizer, with_examples(question, choice.examples[:1], tokenizer, template).text))
    fitted = fit_prompts([question], choice.examples, tokenizer, template, one + 4, 4)
    assert fitted.kept == [1] and fitted.prompts[0].messages.count(prompt.messages[1]) == 1
    assert "dropped from the end of the list" in fitted.note(3)
    assert fit_prompts([question], choice.examples, tokenizer, template, None, 4).kept == [3]


def test_eval_with_baselines_on_a_tiny_run(tiny_lora, capsys):
    run_dir = _copy_run(
        tiny_lora, "eval-baselines",
        {"metrics": ["exact_match", "rouge_l"], "max_new_tokens": 4,
         "gates": ["tuned.rouge_l >= few_shot.rouge_l - 1", "tuned.exact_match >= zero_shot.exact_match - 1"]},
    )
    code = main(["eval", str(run_dir), "--max-examples", "2", "--baselines", "zero_shot,few_shot", "--few-shot-k", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads((run_dir / EVAL).read_text())
    EvalRecord.model_validate(record)
    baselines = record["baselines"]
    assert baselines["requested"] == ["zero_shot", "few_shot"] and baselines["given_by"] == "command line"
    assert baselines["headline_metric"] == "exact_match" and baselines["margin"] == 0.02
    few = baselines["few_shot"]
    assert few["k"] == 2 and few["chosen"] == 2 and few["seed"] == 3 and len(few["examples"]) == 2
    assert few["prompts_with_fewer_examples"] == 0
    assert set(record["metrics"]["rouge_l"]) >= {"base", "few_shot", "tuned"}
    assert all(isinstance(a["few_shot"], str) for a in record["answers"])
    assert record["models"]["few_shot"].startswith("the base weights, with 2 training example")
    assert [g["holds"] for g in record["gates"]] == [True, True]
    assert ("not_paying_for_itself" in [f["finding"] for f in record["diagnosis"]]) == baselines["verdict"].startswith("fine-tuning")
    assert "few-shot examples (seed 3" in captured.out
    wide = Console(width=200, record=True)
    print_evaluation(wide, Evaluation(EvalRecord.model_validate(record), run_dir / EVAL, True))
    shown = wide.export_text()
    assert "zero-shot (base)" in shown and "few-shot (k=2)" in shown and "tuned − few-shot" in shown
    # the report shows the three side by side
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert "few-shot (k=2)" in page and "zero-shot (base)" in page and "tuned − few-shot" in page


def test_baselines_from_the_spec_without_the_base_column(tiny_lora, capsys):
    run_dir = _copy_run(
        tiny_lora, "eval-baselines-spec",
        {"metrics": ["rouge_l"], "max_new_tokens": 2, "compare_base": False, "baselines": ["few_shot"], "few_shot_k": 1,
         "gates": ["tuned.rouge_l >= few_shot.rouge_l + 2"]},
    )
    assert main(["eval", str(run_dir), "--max-examples", "1"]) == 1  # the gate on few_shot fails
    assert "1 gate(s) failed: tuned.rouge_l >= few_shot.rouge_l + 2" in capsys.readouterr().err
    record = json.loads((run_dir / EVAL).read_text())
    assert record["baselines"]["given_by"] == "spec" and record["baselines"]["few_shot"]["chosen"] == 1
    row = record["metrics"]["rouge_l"]
    assert row["base"] is None and isinstance(row["few_shot"], float) and isinstance(row["tuned"], float)
    assert record["gates"][0]["right"] == pytest.approx(row["few_shot"] + 2)
    # --baselines '' turns them off for this evaluation
    assert main(["eval", str(run_dir), "--max-examples", "1", "--baselines", ""]) == 1
    record = json.loads((run_dir / EVAL).read_text())
    assert "baselines" not in record and "few_shot" not in record["metrics"]["rouge_l"]
    assert "the few_shot baseline was not evaluated" in record["gates"][0]["error"]


def test_with_a_validation_split_the_examples_come_from_the_part_kept_for_training(tiny_lora):
    run_dir = _copy_run(tiny_lora, "eval-baselines-split", {})
    lock = json.loads((run_dir / LOCK_NAME).read_text())
    del lock["inputs"]["data"]["validation"]
    lock["data"]["validation"] = {"source": "split", "split": 0.25, "seed": 3}
    (run_dir / LOCK_NAME).write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    run = open_run(run_dir)
    tokenizer = load_tokenizer(run)
    template, _ = locked_chat_template(run)
    held = held_out(run, None)
    assert held.source == "split" and len(held.records) == 2
    choice = choose_examples(run, held, 64, 3, tokenizer, template)
    assert choice.pool == 6 and len(choice.examples) == 6
    held_lines = {f"{held.path}:{r.where}" for r in held.records}
    assert not held_lines & {e.source for e in choice.examples}
    assert not {e.sha256 for e in choice.examples} & {content_hash(r.value) for r in held.records}
