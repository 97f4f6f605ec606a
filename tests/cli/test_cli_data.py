"""cli/data.py: `ftc data check`'s usage errors and how its summary reads (tests/compiler/test_data_check.py runs
the check end to end)."""

from __future__ import annotations

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
