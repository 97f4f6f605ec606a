"""`ftc data from-logs`: every keep and drop rule on logs written through ExchangeLog, leakage refused (a validation
file and a validation_split), and bad feedback or a malformed log exits 1 naming file:line with nothing written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from invoke import invoke
from logdata import chat, exchange, feedback, project, write_logs

TRAIN = [chat("what is 1+1?", "2"), chat("capital of france?", "paris"), chat("say hi", "hi")]
VALIDATION = [chat("what is 2+2?", "4"), chat("colour of the sky?", "blue")]


def _exchanges():
    return [
        exchange("e1", "what is 3+3?", "7"),
        exchange("e2", "name a fruit", "apple"),
        exchange("e3", "name a car", "a boat"),
        exchange("e4", "a question nobody rated"),
        exchange("e5", "What  is 2+2?", "5"),  # the validation file's prompt, in another case and spacing
        exchange("e6", "capital of france?", "london"),
        exchange("e7", "what is 3+3?", "7"),
        exchange("e8", "my email is [REDACTED]", "ok", redactions=1),
        exchange("e9", "write an essay", "no"),
        exchange("e10", None, "done", endpoint="completions", prompt="complete this"),
        exchange("e11", "asked twice", "one"),
        exchange("e11", "asked twice", "two"),
        exchange("e12", "this one failed", None, status=500, error="boom"),
    ]


FEEDBACK = [
    {"id": "e1", "verdict": "bad", "correction": "6"},
    {"id": "e2", "verdict": "good"},
    {"id": "e3", "verdict": "bad", "note": "wrong"},
    {"id": "e5", "verdict": "bad", "correction": "4"},
    {"id": "e6", "verdict": "bad", "correction": "paris"},
    {"id": "e7", "verdict": "bad", "correction": "6"},
    {"id": "e8", "verdict": "good", "correction": "noted"},
    {"id": "e9", "verdict": "bad", "correction": " ".join(["word"] * 200)},
    {"id": "e10", "verdict": "good"},
    {"id": "e11", "verdict": "good"},
    {"id": "e12", "verdict": "good"},
]


@pytest.fixture
def setup(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project(tmp_path, tiny_model, TRAIN, VALIDATION)
    write_logs(tmp_path / "logs", _exchanges(), max_bytes=1500)  # several files: rotation is read in order
    feedback(tmp_path / "feedback.jsonl", FEEDBACK)
    return tmp_path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_keep_and_drop_rule(setup, capsys):
    result = invoke(capsys, "data", "from-logs", "logs", "--spec", "spec.toml", "--feedback", "feedback.jsonl",
                    "--out", "v2.jsonl", "--pairs", "pairs.jsonl", "--keep-good")
    assert result.code == 0, result.err
    new = [chat("what is 3+3?", "6"), chat("name a fruit", "apple"), chat("my email is [REDACTED]", "noted")]
    assert _lines(setup / "v2.jsonl") == TRAIN + new  # the train records first, then the new ones, in log order
    assert _lines(setup / "pairs.jsonl") == [
        {"prompt": [{"role": "user", "content": "what is 3+3?"}], "chosen": [{"role": "assistant", "content": "6"}],
         "rejected": [{"role": "assistant", "content": "7"}]},
        {"prompt": [{"role": "user", "content": "capital of france?"}], "chosen": [{"role": "assistant", "content": "paris"}],
         "rejected": [{"role": "assistant", "content": "london"}]},  # a repeat of train still teaches the preference
    ]
    report = json.loads((setup / "v2.jsonl.report.json").read_text())
    by_id = {}
    for entry in report["exchanges"]:
        by_id.setdefault(entry["id"], []).append(entry)
        assert entry["file"].endswith(".jsonl") and entry["line"] >= 1
    assert len(report["exchanges"]) == 13 and len({e["file"] for e in report["exchanges"]}) > 1
    reason = {i: entries[0]["reason"] for i, entries in by_id.items()}
    action = {i: entries[0]["action"] for i, entries in by_id.items()}
    assert action == {"e1": "changed", "e2": "kept", "e8": "changed"} | {
        i: "dropped" for i in ("e3", "e4", "e5", "e6", "e7", "e9", "e10", "e11", "e12")}
    assert reason["e3"].startswith("rated bad without a correction")
    assert reason["e4"].startswith("no verdict")
    assert reason["e5"].startswith("held-out prompt") and "data/val.jsonl:1" in reason["e5"]
    assert reason["e6"] == "duplicate: repeats train line 2 (case-folded, whitespace collapsed)"
    assert reason["e7"].startswith("duplicate: repeats the new example of ") and by_id["e1"][0]["file"] in reason["e7"]
    assert reason["e9"].startswith("failed the spec's checks: ") and "more than data.max_length = 64" in reason["e9"]
    assert reason["e10"].startswith("not trainable: a /v1/completions request has a raw prompt")
    assert all(e["reason"].startswith("ambiguous id") for e in by_id["e11"]) and len(by_id["e11"]) == 2
    assert reason["e12"].startswith("failed request")
    assert "redacted" in reason["e8"] and by_id["e8"][0]["redactions"] == 1
    assert by_id["e1"][0]["pair"] and by_id["e6"][0]["pair"] and "pair" not in by_id["e7"][0]
    assert report["pairs_dropped"] == [{**{k: by_id["e7"][0][k] for k in ("file", "line", "id")}, "reason": "duplicate of an earlier pair"}]
    c = report["counts"]
    assert (c["exchanges"], c["kept"], c["corrected"], c["kept_good"], c["dropped"], c["pairs"]) == (13, 3, 2, 1, 10, 2)
    assert c["redacted_kept"] == 1 and c["dropped_by_reason"]["duplicate"] == 2
    assert report["inputs"]["feedback"] == {"feedback.jsonl": hashlib.sha256((setup / "feedback.jsonl").read_bytes()).hexdigest()}
    assert report["inputs"]["train"]["data/train.jsonl"] == hashlib.sha256((setup / "data/train.jsonl").read_bytes()).hexdigest()
    assert len(report["inputs"]["logs"]) > 1
    assert "13 exchange(s): 3 kept (2 corrected, 1 rated good), 10 dropped; 2 preference pair(s)" in result.out
    assert "e5: held-out prompt" in result.err and "wrote v2.jsonl: 3 train record(s) + 3 new" in result.out


def test_good_answers_need_keep_good_and_no_feedback_keeps_nothing(setup, capsys):
    result = invoke(capsys, "data", "from-logs", "logs", "--spec", "spec.toml", "--feedback", "feedback.jsonl",
                    "--out", "v2.jsonl", "--report", "r.json")
    assert result.code == 0, result.err
    report = json.loads((setup / "r.json").read_text())
    e2 = next(e for e in report["exchanges"] if e["id"] == "e2")
    assert e2["action"] == "dropped" and e2["reason"].startswith("rated good: answers rated good are kept with --keep-good")
    assert report["counts"]["kept"] == 2 and not (setup / "pairs.jsonl").exists()
    result = invoke(capsys, "data", "from-logs", "logs", "--spec", "spec.toml", "--out", "v3.jsonl")
    assert result.code == 0 and _lines(setup / "v3.jsonl") == TRAIN
    assert json.loads((setup / "v3.jsonl.report.json").read_text())["counts"]["dropped_by_reason"] == {"no verdict": 13}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"id": "nope", "verdict": "good"}, "no exchange of the logs has id 'nope'"),
        ({"id": "e1", "verdict": "meh"}, "verdict: Input should be 'good' or 'bad'"),
        ({"id": "e2", "verdict": "good"}, "a second verdict on 'e2' (the first is line 2)"),
        ('{"id": "e1", "verdict": ', "not a JSON object"),
        ({"id": "e1", "verdict": "bad", "fix": "6"}, "fix: Extra inputs are not permitted"),
    ],
)
def test_bad_feedback_names_its_line_and_writes_nothing(setup, capsys, line, message):
    rows = [json.dumps(r) for r in FEEDBACK[:3]] + [line if isinstance(line, str) else json.dumps(line)]
    (setup / "bad.jsonl").write_text("\n".join(rows) + "\n")
    result = invoke(capsys, "data", "from-logs", "logs", "--spec", "spec.toml", "--feedback", "bad.jsonl", "--out", "v2.jsonl",
                    "--pairs", "p.jsonl")
    assert result.code == 1
    assert f"bad.jsonl:4: {message}" in result.err and "nothing written" in result.err
    assert not any((setup / name).exists() for name in ("v2.jsonl", "p.jsonl", "v2.jsonl.report.json"))


def test_a_malformed_log_line_names_its_file_and_line(setup, capsys):
    first = min((setup / "logs").glob("exchanges-*.jsonl"))
    with first.open("a") as f:
        f.write('{"id": "x"}\n')
    lines = len(first.read_text().splitlines())
    result = invoke(capsys, "data", "from-logs", "logs", "--spec", "spec.toml", "--out", "v2.jsonl")
    assert result.code == 1 and f"{first.name}:{lines}: " in result.err and "nothing written" in result.err
    assert not (setup / "v2.jsonl").exists()


def test_a_validation_split_is_held_out_too(tmp_path, tiny_model, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = [chat(f"question {i}", f"answer {i}") for i in range(20)]
    project(tmp_path, tiny_model, train, data="validation_split = 0.2")
    from ftc.templates.prepare import held_out_indices

    held = held_out_indices(20, 0.2, 42)  # project.seed defaults to 42
    kept = next(i for i in range(20) if i not in held)
    write_logs(tmp_path / "logs", [exchange("a", f"QUESTION {held[0]}"), exchange("b", f"question {kept}  "),
                                   exchange("c", "a new question")])
    feedback(tmp_path / "fb.jsonl", [{"id": i, "verdict": "bad", "correction": "fixed"} for i in "abc"])
    result = invoke(capsys, "data", "from-logs", "logs", "--spec", "spec.toml", "--feedback", "fb.jsonl", "--out", "v2.jsonl")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "v2.jsonl.report.json").read_text())
    a, b, c = report["exchanges"]
    assert a["reason"].startswith("held-out prompt") and "held out by validation_split" in a["reason"]
    assert b["action"] == "changed" and c["action"] == "changed"  # a train prompt with another answer is no leak
    assert "data.validation_split holds out" in report["warnings"][0] and "warning: data.validation_split" in result.err
    assert len(_lines(tmp_path / "v2.jsonl")) == 22


def test_completion_data_gets_completion_records(tmp_path, tiny_model, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project(tmp_path, tiny_model, [{"prompt": "1+1=", "completion": "2"}], [{"prompt": "2+2=", "completion": "4"}], fmt="completion")
    write_logs(tmp_path / "logs", [exchange("a", None, "7", endpoint="completions", prompt="3+3="),
                                   exchange("b", "what is 4+4?", "9"), exchange("c", None, "5", endpoint="completions", prompt="2+2=")])
    feedback(tmp_path / "fb.jsonl", [{"id": i, "verdict": "bad", "correction": "ok"} for i in "abc"])
    result = invoke(capsys, "data", "from-logs", "logs", "--spec", "spec.toml", "--feedback", "fb.jsonl", "--out", "v2.jsonl",
                    "--pairs", "pairs.jsonl")
    assert result.code == 0, result.err
    assert _lines(tmp_path / "v2.jsonl")[1:] == [
        {"prompt": "3+3=", "completion": "ok"},
        {"prompt": [{"role": "user", "content": "what is 4+4?"}], "completion": [{"role": "assistant", "content": "ok"}]},
    ]
    assert _lines(tmp_path / "pairs.jsonl")[0] == {"prompt": "3+3=", "chosen": "ok", "rejected": "7"}
    assert json.loads((tmp_path / "v2.jsonl.report.json").read_text())["exchanges"][2]["reason"].startswith("held-out prompt")


def test_usage_errors(setup, capsys):
    result = invoke(capsys, "data", "from-logs", "logs", "--spec", "spec.toml", "--out", "v2.json")
    assert result.code == 2 and "name the file .jsonl" in result.err
    result = invoke(capsys, "data", "from-logs", "missing", "--spec", "spec.toml", "--out", "v2.jsonl")
    assert result.code == 2 and "log folder not found: missing" in result.err
    result = invoke(capsys, "data", "from-logs", "logs", "--spec", "spec.toml", "--out", "data/train.jsonl")
    assert result.code == 2 and "is the spec's data.train" in result.err
    (setup / "empty").mkdir()
    result = invoke(capsys, "data", "from-logs", "empty", "--spec", "spec.toml", "--out", "v2.jsonl")
    assert result.code == 1 and "no exchanges-NNNNNN.jsonl files" in result.err
