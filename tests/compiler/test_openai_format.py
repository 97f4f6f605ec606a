"""OpenAI's fine-tuning JSONL (compiler/data/openai.py): detection, reading SFT and DPO records as ftc's chat and
preference records, each refusal at its line, the lossless round trips, and builds that train on the converted copy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftc.compiler.build.compile import compile_build
from ftc.compiler.data.check import check_data
from ftc.compiler.data.openai import convert_file, dpo_words, openai_line, read_records, to_openai
from ftc.compiler.data.read import DataProblem, Record, survey
from ftc.compiler.plan.summary import describe_plan
from ftc.compiler.spec.checks import validate

DATA = REPO / "specs" / "data"
USER = {"role": "user", "content": "my invoice was charged twice"}
GOOD = {"role": "assistant", "content": '{"category": "billing"}'}
BAD = {"role": "assistant", "content": '{"category": "login"}'}
SFT = {"messages": [{"role": "system", "content": "You triage tickets."}, USER, {**GOOD, "weight": 1}]}
DPO = {"input": {"messages": [USER]}, "preferred_output": [GOOD], "non_preferred_output": [BAD]}


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def problems(path: Path, openai: bool | None = True) -> list[tuple[int, str, str | None]]:
    return [(p.line, p.message, p.hint) for p in survey(path, path.name, openai=openai).problems]


# -- detection and reading ---------------------------------------------------------------------------


def test_dpo_records_detect_as_openai_and_read_as_preference(tmp_path):
    path = write(tmp_path / "dpo.jsonl", [DPO, DPO | {"preferred_output": [BAD], "non_preferred_output": [GOOD]}])
    found = survey(path, path.name)
    assert (found.format, found.converted_from, found.source, found.records, found.problems) == ("preference", "openai", "openai", 2, ())
    [first, _] = read_records(path, path.name, None)
    assert first == Record(1, {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]})
    assert survey(path, path.name, openai=True) == found


def test_sft_records_are_chat_records_and_detect_as_chat(tmp_path):
    path = write(tmp_path / "sft.jsonl", [SFT, SFT])
    auto = survey(path, path.name)
    assert (auto.format, auto.converted_from, auto.source, auto.records) == ("chat", None, "chat", 2)
    declared = survey(path, path.name, openai=True)
    assert (declared.format, declared.converted_from, declared.records) == ("chat", "openai", 2)
    assert [r.value for r in read_records(path, path.name, True)] == [SFT, SFT]


def test_one_file_holds_one_kind(tmp_path):
    path = write(tmp_path / "mixed.jsonl", [SFT, DPO, {"prompt": "hi", "completion": "hello"}])
    assert problems(path) == [
        (2, "record is OpenAI DPO (input, preferred_output, non_preferred_output) data, but the file is OpenAI SFT (messages) data", "every record of a file has the same format: put SFT and DPO records in separate files"),
        (3, "record has completion, prompt; OpenAI data has messages (SFT), or input, preferred_output and non_preferred_output (DPO)", 'this is ftc completion data: use format = "auto" or "completion"'),
    ]
    # read as ftc's (auto), a DPO record in a chat file is named as OpenAI's
    [(line, message, hint)] = problems(write(tmp_path / "chat.jsonl", [SFT, DPO]), None)
    assert line == 2 and message.startswith("record has input, non_preferred_output, preferred_output; expected messages")
    assert hint.startswith('this looks like OpenAI DPO data: set format = "openai"')


# -- refusals, each at its line ------------------------------------------------------------------------

CALL = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": "{}"}


def test_sft_refusals_name_their_line(tmp_path):
    rows = [
        SFT,
        {**SFT, "tools": [{"type": "function", "function": {"name": "lookup"}}], "parallel_tool_calls": False},
        {"messages": [USER, CALL]},
        {"messages": [USER, {"role": "function", "name": "lookup", "content": "{}"}, GOOD]},
        {"messages": [{**USER, "name": "ana"}, GOOD]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, GOOD]},
        {"messages": [{"role": "system", "content": "Grade the answer."}, USER], "reference_answer": "billing"},
    ]
    path = write(tmp_path / "sft.jsonl", rows)
    found = problems(path)
    tools_hint = "remove the tool turns (assistant turns with tool_calls and the tool results) and the tools, or leave these conversations out"
    assert [(line, message) for line, message, _ in found] == [
        (2, "the record has 'parallel_tool_calls': tool calls are not trained by ftc yet"),
        (2, "the record has 'tools': tool calls are not trained by ftc yet"),
        (3, "turn 2 has 'tool_calls': tool calls are not trained by ftc yet"),
        (4, "turn 2 has 'name': ftc's chat templates do not render names"),
        (4, "turn 2 is a 'function' turn: tool calls are not trained by ftc yet"),
        (5, "turn 1 has 'name': ftc's chat templates do not render names"),
        (6, "turn 1 content is a list of parts, not a string"),
        (7, "this is OpenAI reinforcement fine-tuning data (its messages end with a user turn, for graders to score the answer): ftc does not train on it from a file yet"),
    ]
    hints = {message: hint for _, message, hint in found}
    assert hints["turn 2 has 'tool_calls': tool calls are not trained by ftc yet"] == tools_hint
    assert "join the text parts" in hints["turn 1 content is a list of parts, not a string"]
    assert "final assistant turn" in found[-1][2] and 'kind = "grpo"' in found[-1][2]
    assert survey(path, path.name, openai=True).records == 1


def test_tool_calls_in_chat_data_are_named_as_such(tmp_path):
    """Read as ftc chat data (auto), OpenAI's tool fields get the same messages, not a bare unknown field."""
    path = write(tmp_path / "chat.jsonl", [SFT, {**SFT, "tools": []}, {"messages": [USER, CALL, RESULT, GOOD]}])
    assert [(line, message) for line, message, _ in problems(path, None)] == [
        (2, "the record has 'tools': tool calls are not trained by ftc yet"),
        (3, "turn 2 has 'tool_calls': tool calls are not trained by ftc yet"),
        (3, "unknown field in turn 3 'tool_call_id'"),
        (3, "turn 3 is a 'tool' turn: tool calls are not trained by ftc yet"),
    ]


def test_dpo_refusals_name_their_line(tmp_path):
    rows = [
        DPO,
        {**DPO, "metadata": {"id": 1}},
        {**DPO, "preferred_output": [GOOD, GOOD]},
        {**DPO, "non_preferred_output": "no"},
        {**DPO, "preferred_output": [USER]},
        {**DPO, "input": {"messages": [USER, GOOD]}},
        {**DPO, "input": {"messages": [USER], "tools": [], "parallel_tool_calls": True}},
        {**DPO, "input": [USER]},
        {**DPO, "preferred_output": [BAD]},
        {**DPO, "input": {"messages": [{**USER, "name": "ana"}]}},
        {**DPO, "input": {"messages": [USER], "temperature": 1}},
    ]
    found = problems(write(tmp_path / "dpo.jsonl", rows))
    assert [(line, message) for line, message, _ in found] == [
        (2, "unknown field 'metadata'"),
        (3, "preferred_output holds 2 messages: OpenAI DPO takes exactly one assistant message"),
        (4, "non_preferred_output is a string, not a list of one message"),
        (5, "preferred_output holds a user message, not an assistant one"),
        (6, "input.messages ends with an assistant turn, not a user turn"),
        (7, "input has 'tools': tool calls are not trained by ftc yet"),
        (7, "input has 'parallel_tool_calls': tool calls are not trained by ftc yet"),
        (8, "input is a list, not an object"),
        (9, "preferred_output and non_preferred_output are identical: the pair teaches no preference"),
        (10, "turn 1 has 'name': ftc's chat templates do not render names"),
        (11, "unknown field in input 'temperature'"),
    ]


def test_problems_of_a_converted_dpo_record_use_dpo_names():
    assert dpo_words("prompt is empty") == "input.messages is empty"
    assert dpo_words("chosen and rejected are identical") == "preferred_output and non_preferred_output are identical"
    assert dpo_words("prompted") == "prompted"


# -- writing, and the round trips --------------------------------------------------------------------


def test_ftc_records_to_openai():
    assert to_openai(SFT, "chat") == (SFT, [], False)
    assert to_openai({"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}, "preference") == (DPO, [], False)
    assert to_openai({"prompt": USER["content"], "chosen": GOOD["content"], "rejected": BAD["content"]}, "preference") == (DPO, [], True)
    assert to_openai({"prompt": USER["content"], "completion": GOOD["content"]}, "completion") == ({"messages": [USER, GOOD]}, [], True)
    record, [(message, _)], _ = to_openai({"prompt": [USER], "chosen": [GOOD, GOOD], "rejected": [BAD]}, "preference")
    assert record is None and message == "chosen holds 2 messages: OpenAI DPO takes exactly one assistant message as preferred_output"
    record, [(message, hint)], _ = to_openai({"prompt": "x", "completion": "y", "label": True}, "unpaired")
    assert record is None and message.startswith("unpaired data has no OpenAI format") and "preference records" in hint


def test_openai_lines_keep_openais_key_order():
    assert openai_line({"preferred_output": [{"weight": 1, "content": "a", "role": "assistant"}], "input": {"messages": []}, "non_preferred_output": []}) == (
        '{"input": {"messages": []}, "preferred_output": [{"role": "assistant", "content": "a", "weight": 1}], "non_preferred_output": []}\n'
    )


@pytest.mark.parametrize("rows", [[SFT, {"messages": [USER, {**GOOD, "weight": 0}, USER, GOOD]}], [DPO, {**DPO, "input": {"messages": [SFT["messages"][0], USER]}}]], ids=["sft", "dpo"])
def test_openai_to_ftc_to_openai_gives_the_same_bytes(rows, tmp_path):
    source = tmp_path / "openai.jsonl"
    source.write_text("".join(openai_line(r) for r in rows), encoding="utf-8")
    there = convert_file(source, "openai.jsonl", "ftc", tmp_path / "ftc.jsonl")
    back = convert_file(tmp_path / "ftc.jsonl", "ftc.jsonl", "openai", tmp_path / "back.jsonl")
    assert (there.problems, back.problems, there.records, back.records, back.wrapped) == ([], [], 2, 2, 0)
    assert (tmp_path / "back.jsonl").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("name", ["ticket_triage/train.jsonl", "ticket_triage_prefs/train.jsonl"])
def test_ftc_to_openai_to_ftc_gives_the_same_records(name, tmp_path):
    there = convert_file(DATA / name, name, "openai", tmp_path / "openai.jsonl")
    back = convert_file(tmp_path / "openai.jsonl", "openai.jsonl", "ftc", tmp_path / "ftc.jsonl")
    assert there.problems == back.problems == [] and there.records == back.records > 0
    original = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]
    assert [json.loads(line) for line in (tmp_path / "ftc.jsonl").read_text(encoding="utf-8").splitlines()] == original


def test_a_record_that_cannot_convert_writes_nothing(tmp_path):
    out = tmp_path / "out.jsonl"
    rows = [{"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}, {"prompt": [USER], "chosen": [GOOD, GOOD], "rejected": [BAD]}]
    done = convert_file(write(tmp_path / "prefs.jsonl", rows), "prefs.jsonl", "openai", out)
    assert [str(p) for p in done.problems] == ["prefs.jsonl:2: chosen holds 2 messages: OpenAI DPO takes exactly one assistant message as preferred_output"]
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl.*"))
    done = convert_file(write(tmp_path / "text.jsonl", [{"text": "hi"}]), "text.jsonl", "openai", out)
    assert [(p.line, p.message.split(":")[0]) for p in done.problems] == [(1, "text data has no OpenAI format")] and not out.exists()


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12).filter(str.strip)
_conversations = st.lists(st.tuples(_text, _text, st.sampled_from([None, 0, 1])), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=_conversations, system=st.none() | _text, pair=st.booleans())
def test_round_trips_are_lossless(tmp_path, turns, system, pair):
    """Any well-formed chat or message-list preference record survives ftc -> openai -> ftc, and its OpenAI line
    survives openai -> ftc -> openai byte for byte."""
    messages = [{"role": "system", "content": system}] if system else []
    for question, answer, weight in turns:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer, **({} if weight is None else {"weight": weight})}]
    messages[-1].pop("weight", None)  # one trained turn at least
    if pair:
        record = {"prompt": messages[:-1], "chosen": [messages[-1]], "rejected": [{"role": "assistant", "content": messages[-1]["content"] + "!"}]}
        record["prompt"] = [{k: v for k, v in m.items() if k != "weight"} for m in record["prompt"]]
    else:
        record = {"messages": messages}
    source = write(tmp_path / "ftc.jsonl", [record])
    assert convert_file(source, "ftc.jsonl", "openai", tmp_path / "openai.jsonl").problems == []
    assert convert_file(tmp_path / "openai.jsonl", "openai.jsonl", "ftc", tmp_path / "back.jsonl").problems == []
    assert json.loads((tmp_path / "back.jsonl").read_text(encoding="utf-8")) == record
    assert convert_file(tmp_path / "back.jsonl", "back.jsonl", "openai", tmp_path / "again.jsonl").problems == []
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "openai.jsonl").read_bytes()


# -- builds ----------------------------------------------------------------------------------------


def _spec(root: Path, tiny_model: Path, kind: str, data: str) -> Path:
    (root / "spec.toml").write_text(
        f"""
[project]
name = "openai-{kind}"

[model]
base = "{os.path.relpath(tiny_model, root)}"

[data]
train = "train.jsonl"
max_length = 512
{data}

[method]
kind = "{kind}"

[training]
max_steps = 1
batch_size = 2
micro_batch_size = 2
report_to = []

[hardware]
accelerator = "cpu"
""",
        encoding="utf-8",
    )
    return root / "spec.toml"


@pytest.mark.parametrize("declared", [True, False], ids=["format-openai", "auto"])
def test_a_dpo_build_trains_on_the_converted_pairs(tmp_path, tiny_model, declared):
    prefs = [json.loads(line) for line in (DATA / "ticket_triage_prefs" / "val.jsonl").read_text(encoding="utf-8").splitlines()]
    convert_file(DATA / "ticket_triage_prefs" / "val.jsonl", "val.jsonl", "openai", tmp_path / "train.jsonl")
    spec = _spec(tmp_path, tiny_model, "dpo", 'format = "openai"' if declared else "")
    build = compile_build(spec, root=tmp_path)
    data = build.lock.data
    assert (data.format, data.converted_from, data.format_detected) == ("preference", "openai", not declared)
    assert [json.loads(line) for line in build.files["data/train.jsonl"].text().splitlines()] == prefs
    assert build.lock.inputs.data["train"].path == "train.jsonl"
    assert f"openai ({'declared' if declared else 'detected'}), converted to preference" in describe_plan(build.lock)


def test_an_sft_build_trains_on_the_conversations(tmp_path, tiny_model, monkeypatch):
    rows = [{"messages": [USER, {**GOOD, "weight": 1}]}, {"messages": [USER, {**BAD, "weight": 0}, USER, GOOD]}] * 3
    write(tmp_path / "train.jsonl", rows)
    build = compile_build(_spec(tmp_path, tiny_model, "lora", 'format = "openai"'), root=tmp_path)
    assert (build.lock.data.format, build.lock.data.converted_from, build.lock.data.format_detected) == ("chat", "openai", False)
    assert [json.loads(line) for line in build.files["data/train.jsonl"].text().splitlines()] == rows
    monkeypatch.chdir(tmp_path)
    report = check_data(tmp_path / "spec.toml", tmp_path)
    assert report.ok and report.format == "openai" and report.splits[0].stats.examples == 6
    # auto reads the same file as ftc chat data, trained from the source as it is
    auto = compile_build(_spec(tmp_path, tiny_model, "lora", ""), root=tmp_path)
    assert (auto.lock.data.format, auto.lock.data.converted_from) == ("chat", None) and "data/train.jsonl" not in auto.files


def test_a_file_of_another_format_is_named(tmp_path, tiny_model):
    convert_file(DATA / "ticket_triage_prefs" / "val.jsonl", "val.jsonl", "openai", tmp_path / "train.jsonl")
    spec = _spec(tmp_path, tiny_model, "dpo", 'format = "preference"')
    [wrong] = [d for d in validate(spec)[1] if d.is_error]
    assert (wrong.key, wrong.message) == ("data.format", "format = 'preference', but train.jsonl holds openai data")
    write(tmp_path / "train.jsonl", [SFT] * 4)
    [wrong] = [d for d in validate(_spec(tmp_path, tiny_model, "dpo", 'format = "openai"'))[1] if d.is_error]
    assert wrong.message == "DPO needs preference data (prompt, chosen, rejected), but train.jsonl holds chat data"


def test_every_record_problem_is_reported_not_dropped(tmp_path):
    path = write(tmp_path / "dpo.jsonl", [DPO, "not json", {**DPO, "preferred_output": []}])
    items = list(read_records(path, path.name, True))
    assert [type(i) for i in items] == [Record, DataProblem, DataProblem]
    assert [i.line for i in items] == [1, 2, 3]
