"""Declarative rewards (templates/rewards.py): each kind scores completions as trl calls it, with the reference
read from the "reference" column or a named field, and agrees with the `ftc eval` metric of the same name."""

from __future__ import annotations

import runpy

import pytest
from jsonschema.exceptions import SchemaError

from ftc.runtime.evaluate import metrics
from ftc.templates import rewards


def entry(kind, name=None, **settings):
    return {"name": name or kind, "kind": kind, "weight": 1.0, **settings}


def call(reward, completions, completion_ids=None, **columns):
    """As trl's GRPOTrainer._calculate_rewards calls a reward function."""
    n = len(completions)
    ids = completion_ids if completion_ids is not None else [[1] * 3 for _ in range(n)]
    prompts = [[{"role": "user", "content": "classify"}]] * n
    return reward(
        prompts=prompts,
        completions=completions,
        completion_ids=ids,
        trainer_state=object(),
        log_extra=lambda *a, **k: None,
        log_metric=lambda *a, **k: None,
        **columns,
    )


def chat(text):
    return [{"role": "assistant", "content": text}]


def test_answer_text_of_strings_and_messages():
    assert rewards.answer_text(" plain ") == " plain "
    assert rewards.answer_text(chat('{"a": 1}')) == '{"a": 1}'
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "he"}, {"type": "text", "text": "llo"}]}]
    assert rewards.answer_text(parts) == "hello"
    turns = [chat("first")[0], {"role": "tool", "content": "42"}, chat("second")[0]]
    assert rewards.answer_text(turns) == "first\nsecond"


def test_reference_value_of_each_cell_type():
    assert rewards.reference_value(" billing ") == " billing "
    assert rewards.reference_value({"b": 2, "a": [1, True]}) == '{"a": [1, true], "b": 2}'
    assert rewards.reference_value(3) == "3"
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "early"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "late"},
    ]
    assert rewards.reference_value(messages) == "late"
    with pytest.raises(ValueError, match="without an assistant message"):
        rewards.reference_value([{"role": "user", "content": "q"}])


def test_json_valid_with_string_and_conversational_completions():
    reward = rewards.reward_function(entry("json_valid"))
    assert call(reward, [' {"a": 1}\n', "{'a': 1}", "not json", "[1, 2]"]) == [1.0, 0.0, 0.0, 1.0]
    assert call(reward, [chat('{"a": 1}'), chat("{oops")]) == [1.0, 0.0]


def test_json_schema_validates_parsed_answers():
    schema = {"type": "object", "properties": {"category": {"enum": ["billing", "login"]}}, "required": ["category"]}
    reward = rewards.reward_function(entry("json_schema", schema=schema))
    answers = ['{"category": "billing"}', '{"category": "weather"}', '{"other": 1}', '{"category": "login"', ""]
    assert call(reward, answers) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert call(reward, [chat('{"category": "login"}')]) == [1.0]


def test_json_schema_refuses_a_bad_schema_when_built():
    with pytest.raises(SchemaError):
        rewards.reward_function(entry("json_schema", schema={"type": 12}))


def test_exact_match_against_the_reference_column():
    reward = rewards.reward_function(entry("exact_match", field=None, key=None))
    got = call(reward, [" billing\n", "Billing", chat("login ")], reference=["billing", "billing", " login"])
    assert got == [1.0, 0.0, 1.0]


def test_exact_match_on_a_key_of_the_answer():
    reward = rewards.reward_function(entry("exact_match", field="category", key="category"))
    answers = ['{"category": "billing", "urgent": true}', '{"category": "login"}', "billing", '{"priority": 2}']
    got = call(reward, answers, category=["billing"] * 4, reference=['{"category": "billing"}'] * 4)
    assert got == [1.0, 0.0, 0.0, 0.0]
    reward = rewards.reward_function(entry("exact_match", field="priority", key="priority"))
    answers = ['{"priority": 2}', '{"priority": "2"}', '{"priority": 3}']
    assert call(reward, answers, priority=[2, 2, 2]) == [1.0, 1.0, 0.0]


def test_label_match_reads_the_label_from_a_json_reference():
    reward = rewards.reward_function(entry("label_match", key="category", field=None))
    references = ['{"category": "billing", "reply": "Sorry about that."}'] * 3
    answers = ['{"category": "billing", "reply": "different words"}', '{"category": "login"}', "billing"]
    assert call(reward, answers, reference=references) == [1.0, 0.0, 0.0]


def test_label_match_with_a_plain_reference_takes_the_reference_as_the_label():
    reward = rewards.reward_function(entry("label_match", key="category", field=None))
    answers = ['{"category": "billing"}', " billing\n", '{"category": "login"}', "login"]
    assert call(reward, answers, reference=[" billing "] * 4) == [1.0, 1.0, 0.0, 0.0]


def test_label_match_with_non_string_labels_in_a_named_field():
    reward = rewards.reward_function(entry("label_match", key="tags", field="meta"))
    meta = [{"tags": ["a", "b"]}, {"tags": ["a", "b"]}, {"tags": {"y": 1, "x": 2}}]
    answers = ['{"tags": ["a", "b"]}', '{"tags": ["b", "a"]}', '{"tags": {"x": 2, "y": 1}}']
    assert call(reward, answers, meta=meta, reference=["unused"] * 3) == [1.0, 0.0, 1.0]


def test_label_match_with_a_message_list_field():
    reward = rewards.reward_function(entry("label_match", key="category", field="messages"))
    conversation = [
        {"role": "user", "content": "my invoice was charged twice"},
        {"role": "assistant", "content": '{"category": "billing"}'},
    ]
    got = call(reward, [chat('{"category": "billing"}'), chat('{"category": "login"}')], messages=[conversation] * 2)
    assert got == [1.0, 0.0]


def test_label_match_agrees_with_eval_accuracy():
    """ftc eval's accuracy with a label field, example by example, against the reward on the same pairs."""
    reward = rewards.reward_function(entry("label_match", key="category"))
    cases = [
        ('{"category": "billing"}', '{"category": "billing"}'),
        ('{"category": "login"}', '{"category": "billing"}'),
        ("billing", "billing"),
        ('{"category": "billing"}', "billing"),
        ("login", "billing"),
        ('{"category": 3}', '{"category": 3}'),
    ]
    for answer, reference in cases:
        label = rewards.label_of(reference, "category") or reference.strip()
        example = metrics.Example(reference=reference, label=label)
        expected = metrics.accuracy([answer], [example], "category").value
        assert call(reward, [answer], reference=[reference]) == [expected], (answer, reference)


def test_regex_match_and_its_reverse():
    found = rewards.reward_function(entry("regex", name="has_ticket", pattern=r"TICKET-\d+", match=True))
    absent = rewards.reward_function(entry("regex", name="no_apology", pattern=r"(?i)\bsorry\b", match=False))
    assert call(found, ["see TICKET-42 now", "see ticket-42", chat("TICKET-7")]) == [1.0, 0.0, 1.0]
    assert call(absent, ["We are sorry.", "Fixed.", chat("SORRY")]) == [0.0, 1.0, 0.0]


def test_length_counts_completion_ids():
    reward = rewards.reward_function(entry("length", target=10, penalty=0.5))
    ids = [[7] * 10, [7] * 4, [7] * 25, []]
    assert call(reward, ["a", "b", "c", ""], completion_ids=ids) == pytest.approx([0.0, -0.3, -0.75, -0.5])
    with pytest.raises(ValueError, match="positive number of tokens"):
        rewards.reward_function(entry("length", target=0, penalty=1.0))


@pytest.mark.parametrize("metric", ["rouge_l", "chrf"])
def test_similarity_agrees_with_eval_metrics(metric):
    reward = rewards.reward_function(entry("similarity", metric=metric, field=None))
    pairs = [
        ("The invoice was charged twice, refund issued.", "Your invoice was charged twice; we issued a refund."),
        ("Reset your password from the login page.", "Reset the password on the login page."),
        ("completely unrelated", "Your invoice was charged twice."),
        ("Same words exactly.", "Same words exactly."),
    ]
    score = metrics.rouge_l if metric == "rouge_l" else metrics.chrf
    for answer, reference in pairs:
        expected = score([answer], [metrics.Example(reference=reference)]).value
        got = call(reward, [answer, chat(answer)], reference=[reference] * 2)
        assert got == pytest.approx([expected] * 2, abs=1e-9), (answer, reference)
        assert 0.0 <= got[0] <= 1.0
    assert call(reward, ["Same words exactly."], reference=["Same words exactly."]) == pytest.approx([1.0])


def test_similarity_against_a_named_field():
    reward = rewards.reward_function(entry("similarity", metric="rouge_l", field="summary"))
    got = call(reward, ["refund issued", "nothing alike"], summary=["refund issued", "refund issued"])
    assert got == pytest.approx([1.0, 0.0])


def test_each_function_is_named_after_its_entry():
    reward = rewards.reward_function(entry("regex", name="regex_TICKET", pattern="TICKET"))
    assert reward.__name__ == "regex_TICKET"


def test_declared_rewards_skip_reward_models_and_keep_the_order():
    entries = [
        entry("json_valid"),
        {"name": "reward_model", "kind": "reward_model", "weight": 0.5, "path": "rm/final"},
        entry("length", target=8, penalty=1.0),
    ]
    assert [f.__name__ for f in rewards.declared_rewards(entries)] == ["json_valid", "length"]


def test_reward_models_and_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="reward_model"):
        rewards.reward_function({"name": "rm", "kind": "reward_model", "weight": 1.0, "path": "rm"})
    with pytest.raises(ValueError, match="unknown kind 'bleu'"):
        rewards.reward_function(entry("bleu"))
    with pytest.raises(ValueError, match="unknown similarity metric 'bleu'"):
        rewards.reward_function(entry("similarity", metric="bleu"))


def test_a_missing_reference_column_is_named():
    reward = rewards.reward_function(entry("exact_match", field="answer"))
    with pytest.raises(ValueError, match="reads the dataset column 'answer'.*reference"):
        call(reward, ["x"], reference=["x"])


def test_the_script_includes_the_module_from_its_banner(tmp_path):
    """The part a generated script includes runs on the script's own imports, with no ftc."""
    from ftc.compiler.build import render

    part = render.support("rewards.py")
    assert part.startswith("# ---- ftc rewards")
    imports = (
        "import json\nimport re\n\nfrom jsonschema.validators import validator_for\n"
        "from rouge_score import rouge_scorer\nfrom sacrebleu.metrics import CHRF\n\n"
    )
    script = tmp_path / "script.py"
    script.write_text(imports + part, encoding="utf-8")
    namespace = runpy.run_path(str(script))
    reward = namespace["declared_rewards"]([entry("json_valid")])[0]
    assert call(reward, ['{"ok": true}', "no"]) == [1.0, 0.0]
