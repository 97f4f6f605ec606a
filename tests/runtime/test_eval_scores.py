"""From answers to eval.json's numbers: the metric rows base versus tuned, lm-eval's tasks, and the gates read
from both."""

from __future__ import annotations

import pytest

from ftc.runtime.evaluate import lmeval
from ftc.runtime.evaluate import metrics as m
from ftc.runtime.evaluate.ask import Side
from ftc.runtime.evaluate.scores import check_gates, gate_scores, lm_eval_record, metric_rows
from ftc.runtime.generate import Answer

REFS = [m.Example('{"a": 1}', None), m.Example("no", None)]


def test_metric_rows_side_by_side_with_the_references():
    sides = {"base": ["yes", "no"], "tuned": ['{"a": 1}', "no"]}
    rows = metric_rows(["exact_match", "json_valid"], sides, {"base": [1, 1], "tuned": [5, 1]}, REFS, None, None, None, [5, 1])
    assert rows["exact_match"] == {"base": 0.5, "tuned": 1.0, "note": None}
    assert rows["json_valid"]["base"] == 0.0 and rows["json_valid"]["tuned"] == 0.5
    assert rows["json_valid"]["reference"] == 0.5  # what the answers should look like


def test_a_base_that_was_not_evaluated_has_no_numbers_and_says_why():
    rows = metric_rows(["exact_match"], {"base": None, "tuned": ["x", "no"]}, {"base": [], "tuned": [1, 1]}, REFS, None, None, None, [5, 1])
    assert rows["exact_match"] == {"base": None, "tuned": 0.5, "note": "compare_base = false: the base model was not evaluated"}
    scores = gate_scores(rows, {})
    assert scores["base"] == scores["zero_shot"] == {"exact_match": None} and scores["tuned"] == {"exact_match": 0.5}
    assert scores["few_shot"] == {"exact_match": None}  # no few-shot column: no number (check_gates says why)
    why = {"base.exact_match": "compare_base = false: the base model was not evaluated"}
    [relative, absolute] = check_gates(["tuned.exact_match >= base.exact_match", "tuned.exact_match >= 0.5"], scores, why)
    assert not relative["holds"] and "base.exact_match: compare_base = false" in relative["error"]
    assert absolute == {"gate": "tuned.exact_match >= 0.5", "holds": True, "left": 0.5, "right": 0.5, "error": None}


def _result(metric_value: float, answers: list[str]) -> dict:
    return {
        "metric": "exact_match",
        "examples": len(answers),
        "scores": {"exact_match": metric_value},
        "samples": [{"filtered_resps": [a]} for a in answers],
    }


def test_lm_eval_tasks_and_their_agreement_with_ftcs_answers():
    heldout = lmeval.HELDOUT_TASK
    sides = {
        "base": Side([Answer("x", 1, True)], {heldout: _result(0.0, ["x"]), "gsm8k": {"error": "no network"}}),
        "tuned": Side([Answer("y", 1, True)], {heldout: _result(1.0, [" z "]), "gsm8k": {"error": "no network"}}),
    }
    task = object()  # the held-out task was written
    record = lm_eval_record(sides, ["gsm8k", "mmlu"], {"mmlu": "not installed"}, task, {"base": ["x"], "tuned": ["y"]}, "chat")
    assert list(record) == [heldout, "gsm8k", "mmlu"]
    held = record[heldout]
    assert held["status"] == "ok" and held["kind"] == "held_out" and held["base"] == {"exact_match": 0.0}
    assert held["answers_agree_with_ftc"] == {"base": "1/1", "tuned": "0/1"}
    assert held["first_disagreement"] == {"tuned": {"example": 0, "lm_eval": " z ", "ftc": "y"}}
    assert record["gsm8k"]["status"] == "unavailable" and record["gsm8k"]["reason"] == "no network; no network"
    assert record["mmlu"] == {
        "status": "unavailable", "kind": "general", "metric": None, "examples": 0, "base": None, "tuned": None, "reason": "not installed",
    }
    scores = gate_scores({}, record)
    assert scores["tuned"][heldout] == 1.0 and scores["base"]["mmlu"] is None


def test_text_data_has_no_held_out_task():
    record = lm_eval_record({"base": None, "tuned": None}, [], {}, None, {"base": [], "tuned": []}, "text")
    assert record[lmeval.HELDOUT_TASK]["status"] == "unavailable" and "text data" in record[lmeval.HELDOUT_TASK]["reason"]


@pytest.mark.parametrize("gate", ["tuned.exact_match >=", "tuned.nothing > 1"])
def test_a_gate_that_cannot_be_checked_is_an_error(gate):
    [result] = check_gates([gate], {"base": {}, "tuned": {"exact_match": 1.0}}, {})
    assert not result["holds"] and result["error"]
