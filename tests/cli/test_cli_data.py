"""cli/data.py: `ftc data check`'s usage errors and how its summary reads (tests/compiler/test_data_check.py runs
the check end to end), and `ftc data convert`'s output, exit codes and usage errors."""

from __future__ import annotations

import json

from invoke import invoke

from ftc.cli.data import _print_split, _summary_rows

SPLIT = {
    "file": "data/train.jsonl",
    "examples": 1200,
    "records": 1210,
    "tokens": 45678,
    "tokens_per_example": {"min": 5, "median": 30.5, "p95": 90, "max": 1500},
    "overlong": {"error": 0, "dropped": 3, "truncated": 7},
    "overlong_share": 0.00833,
    "turns_per_conversation": None,
    "duplicates": {"exact": [[4, 9], [12, 13, 14]], "normalized": []},
    "loss_token_share": 0.25,
    "padding_waste": {"pad_to_max_length": 0.5, "packing": None},
    "histogram": [{"from": 0, "to": 64, "examples": 10}, {"from": 64, "to": 128, "examples": 5}],
    "labels": {"yes": 3, "no": 1},
    "label_field": None,
}


def test_data_needs_an_action_and_a_spec(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(capsys, "data")
    assert result.code == 2 and "the following arguments are required: ACTION" in result.err
    result = invoke(capsys, "data", "check", "missing.toml")
    assert (result.code, result.err) == (2, "ftc data: error: spec not found: missing.toml\n")


def test_the_summary_table_rows():
    rows = dict(_summary_rows([SPLIT]))
    assert rows["examples (of records)"] == ["1,200 (of 1,210)"]
    assert rows["tokens"] == ["45,678"]
    assert rows["tokens/example min/median/p95/max"] == ["5 / 30.5 / 90 / 1,500"]
    assert rows["over max_length: error/dropped/truncated"] == ["0/3/7 (0.8%)"]
    assert rows["turns/conversation min/median/p95/max"] == ["-"]
    assert rows["duplicates: exact / normalised"] == ["5 / 0"]
    assert rows["tokens that carry loss"] == ["25.0%"]
    assert rows["padding waste: to max_length / packed"] == ["50.0% / -"]


def test_a_splits_histogram_labels_and_duplicates(capsys):
    _print_split("train", SPLIT)
    assert capsys.readouterr().out.splitlines() == [
        "",
        "train: tokens per example",
        f"       0-64     {'#' * 40} 10",
        f"      64-128    {'#' * 20:<40} 5",
        "train: answers form 2 labels: 'yes' 3 (75%), 'no' 1 (25%)",
        "train: exact duplicates: lines 4, 9; lines 12, 13, 14",
    ]


# -- ftc data convert (compiler/data/openai.py holds the conversion; tests/compiler/test_openai_format.py its cases) --

PAIR = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "go away"}]}
DPO_LINE = '{"input": {"messages": [{"role": "user", "content": "hi"}]}, "preferred_output": [{"role": "assistant", "content": "hello"}], "non_preferred_output": [{"role": "assistant", "content": "go away"}]}\n'


def _write(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_convert_writes_openai_and_back(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "prefs.jsonl", [PAIR, {**PAIR, "prompt": "hi", "chosen": "hello", "rejected": "go away"}])
    result = invoke(capsys, "data", "convert", "prefs.jsonl", "--to", "openai", "--out", "dpo.jsonl")
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == [
        "converted 2 record(s) of prefs.jsonl (ftc preference) into dpo.jsonl (OpenAI DPO)",
        "1 of them had a string prompt or answers, or were completion records, and were wrapped into messages: converting back gives message lists (chat or preference), not the strings",
    ]
    assert (tmp_path / "dpo.jsonl").read_text(encoding="utf-8") == DPO_LINE * 2
    result = invoke(capsys, "data", "convert", "dpo.jsonl", "--to", "ftc", "--out", "back.jsonl")
    assert (result.code, result.out) == (0, "converted 2 record(s) of dpo.jsonl (OpenAI DPO) into back.jsonl (ftc preference)\n")
    assert [json.loads(line) for line in (tmp_path / "back.jsonl").read_text(encoding="utf-8").splitlines()] == [PAIR, PAIR]


def test_convert_lists_every_problem_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tools = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "tools": []}
    rft = {"messages": [{"role": "user", "content": "hi"}], "answer": "hello"}
    _write(tmp_path / "sft.jsonl", [tools, rft])
    result = invoke(capsys, "data", "convert", "sft.jsonl", "--to", "ftc", "--out", "out.jsonl")
    assert result.code == 1 and result.out == ""
    lines = result.err.splitlines()
    assert lines[0] == "sft.jsonl:1: the record has 'tools': tool calls are not trained by ftc yet"
    assert lines[2].startswith("sft.jsonl:2: this is OpenAI reinforcement fine-tuning data")
    assert lines[-1] == "sft.jsonl: 2 problem(s); nothing written" and not (tmp_path / "out.jsonl").exists()
    _write(tmp_path / "kto.jsonl", [{"prompt": "hi", "completion": "hello", "label": True}])
    result = invoke(capsys, "data", "convert", "kto.jsonl", "--to", "openai", "--out", "out.jsonl")
    assert result.code == 1 and result.err.startswith("kto.jsonl:1: unpaired data has no OpenAI format")


def test_convert_usage_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "prefs.jsonl", [PAIR])
    (tmp_path / "notes.txt").write_text("hi", encoding="utf-8")
    cases = {
        ("missing.jsonl", "--to", "openai", "--out", "o.jsonl"): "data file not found: missing.jsonl",
        ("notes.txt", "--to", "openai", "--out", "o.jsonl"): "notes.txt: unsupported data file type '.txt'; give a .jsonl, .json, .csv or .parquet file",
        ("prefs.jsonl", "--to", "openai", "--out", "o.json"): "--out o.json: the converted data is JSON Lines; name the file .jsonl",
        ("prefs.jsonl", "--to", "openai", "--out", "./prefs.jsonl"): "--out ./prefs.jsonl is IN itself; give a new file to write",
    }
    for argv, message in cases.items():
        result = invoke(capsys, "data", "convert", *argv)
        assert (result.code, result.err) == (2, f"ftc data: error: {message}\n"), argv
    result = invoke(capsys, "data", "convert", "prefs.jsonl", "--to", "anthropic", "--out", "o.jsonl")
    assert result.code == 2 and "invalid choice: 'anthropic'" in result.err
    result = invoke(capsys, "data", "convert", "prefs.jsonl", "--out", "o.jsonl")
    assert result.code == 2 and "the following arguments are required: --to" in result.err
    assert (tmp_path / "prefs.jsonl").read_text(encoding="utf-8") == json.dumps(PAIR) + "\n"
    result = invoke(capsys, "data", "convert", "--help")
    assert result.code == 0 and "--to {openai,ftc}" in result.out and "not the strings" in " ".join(result.out.split())
