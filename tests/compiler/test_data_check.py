"""`ftc data check`: the quickstart's data passes; broken data is reported line by line and exits 1; the
summary counts duplicates, labels, overlap between splits, and what max_length would cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

CORPUS = REPO / "tests" / "data" / "broken"


def data_check(cwd: Path, spec: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftc.cli", "data", "check", spec, *flags], cwd=cwd, capture_output=True, text=True, timeout=300)


def project(root: Path, tiny_model: Path, train: list[str], validation: list[str] | None = None, extra: str = "") -> None:
    (root / "data").mkdir()
    (root / "data" / "train.jsonl").write_text("".join(line + "\n" for line in train), encoding="utf-8")
    if validation is not None:
        (root / "data" / "val.jsonl").write_text("".join(line + "\n" for line in validation), encoding="utf-8")
    (root / "spec.toml").write_text(
        f"""
[project]
name = "check"

[model]
base = "{os.path.relpath(tiny_model, root)}"

[data]
train = "data/train.jsonl"
{'validation = "data/val.jsonl"' if validation is not None else ""}
format = "chat"
max_length = 64
{extra}

[method]
kind = "lora"
""",
        encoding="utf-8",
    )


def chat(question: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})


def test_the_quickstart_data_passes_and_is_summarised():
    result = data_check(REPO, "specs/quickstart.toml", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["errors"] == [] and report["format"] == "chat"
    train, val = report["splits"]["train"], report["splits"]["validation"]
    lock = json.loads((REPO / "tests" / "golden" / "quickstart" / "ftc.lock.json").read_text())
    assert (train["examples"], train["tokens"], train["loss_tokens"]) == tuple(lock["data"]["splits"]["train"][k] for k in ("examples", "tokens", "loss_tokens"))
    assert val["examples"] == 60 and train["tokens_per_example"]["max"] == lock["data"]["splits"]["train"]["longest"]
    assert train["turns_per_conversation"] == {"min": 2, "median": 2, "p95": 2, "max": 2}
    assert train["duplicates"] == {"exact": [], "normalized": []}
    assert sum(b["examples"] for b in train["histogram"]) == 600
    assert 0.3 < train["loss_token_share"] < 0.4
    assert train["padding_waste"]["pad_to_max_length"] > train["padding_waste"]["packing"]


def test_broken_data_is_reported_line_by_line(tmp_path, tiny_model):
    project(tmp_path, tiny_model, (CORPUS / "chat.jsonl").read_text(encoding="utf-8").splitlines())
    result = data_check(tmp_path, "spec.toml")
    assert result.returncode == 1
    expected = [line.split(": ", 1) for line in (CORPUS / "chat.jsonl.expected").read_text().splitlines() if not line.startswith("#")]
    for number, text in expected:
        assert f"data/train.jsonl:{number}: " in result.stderr and text in result.stderr, (number, text)
    assert "`ftc compile` refuses to build until they are fixed" in result.stderr
    compiled = subprocess.run([sys.executable, "-m", "ftc.cli", "compile", "spec.toml"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert compiled.returncode == 1 and "turn 2 has unknown role 'bot'" in compiled.stderr


def test_duplicates_labels_overlap_and_overlong(tmp_path, tiny_model):
    train = [chat(f"ticket {i}: my invoice is wrong", "billing") for i in range(9)]
    train += [chat("ticket 0:   My invoice is WRONG", "billing"), chat("ticket 0: my invoice is wrong", "billing"), chat("where is my parcel " * 20, "shipping")]
    project(tmp_path, tiny_model, train, validation=[chat("ticket 3: my invoice is wrong", "billing")], extra='overlong = "drop"')
    result = data_check(tmp_path, "spec.toml", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    split = report["splits"]["train"]
    assert split["duplicates"]["exact"] == [[1, 11]]
    assert split["duplicates"]["normalized"] == [[1, 10, 11]]
    assert split["labels"] == {"billing": 11, "shipping": 1}
    assert split["overlong"] == {"error": 0, "dropped": 1, "truncated": 0}
    warnings = "\n".join(report["warnings"])
    assert "heavy imbalance in train: 11 of 12 answers (92%) are 'billing'" in warnings
    assert "1 validation example(s) also appear in train" in warnings and "lines 1" in warnings


def test_a_named_label_field_is_counted_from_the_record_or_the_json_answer(tmp_path, tiny_model):
    def labelled(i: int, label: str | None) -> str:
        record = json.loads(chat(f"ticket {i}", "done"))
        if label is not None:
            record["label"] = label
        return json.dumps(record)

    train = [labelled(i, "refund" if i < 8 else "other") for i in range(10)] + [labelled(10, None)]
    project(tmp_path, tiny_model, train, extra='label_field = "label"')
    report = json.loads(data_check(tmp_path, "spec.toml", "--json").stdout)
    split = report["splits"]["train"]
    assert report["errors"] == [] and split["label_field"] == "label"  # the named field is allowed in records
    assert split["labels"] == {"refund": 8, "other": 2} and split["unlabeled"] == [11]
    warnings = "\n".join(report["warnings"])
    assert "1 train example(s) of data/train.jsonl have no 'label' label, lines 11" in warnings
    assert "heavy imbalance" not in warnings  # 80% is not more than 80%

    # without label_field the same field is a misspelling like any other
    spec = tmp_path / "spec.toml"
    spec.write_text(spec.read_text().replace('label_field = "label"', ""))
    result = data_check(tmp_path, "spec.toml")
    assert result.returncode == 1 and "unknown field 'label'" in result.stderr

    # a key of the assistant's JSON answer, as in the quickstart (more than 20 distinct answers: not inferred)
    answers = [chat(f"ticket {i}", json.dumps({"category": "bug" if i else "billing", "summary": f"case {i}"})) for i in range(30)]
    (tmp_path / "data" / "train.jsonl").write_text("".join(a + "\n" for a in answers))
    spec.write_text(spec.read_text().replace("[method]", 'label_field = "category"\n\n[method]'))
    report = json.loads(data_check(tmp_path, "spec.toml", "--json").stdout)
    assert report["splits"]["train"]["labels"] == {"bug": 29, "billing": 1}
    assert any("heavy imbalance in train: 29 of 30 answers (97%) are 'bug'" in w for w in report["warnings"])
    text = data_check(tmp_path, "spec.toml").stdout
    assert "'category' takes 2 values: 'bug' 29 (97%), 'billing' 1 (3%)" in text


def test_broken_unpaired_data_is_reported_line_by_line(tmp_path, tiny_model):
    """KTO's format gets the same line-by-line report; a method that does not train on it is told so."""
    project(tmp_path, tiny_model, (CORPUS / "unpaired_records.jsonl").read_text(encoding="utf-8").splitlines())
    spec = tmp_path / "spec.toml"
    spec.write_text(spec.read_text().replace('format = "chat"', 'format = "unpaired"'))
    result = data_check(tmp_path, "spec.toml")
    assert result.returncode == 1
    expected = [line.split(": ", 1) for line in (CORPUS / "unpaired_records.jsonl.expected").read_text().splitlines() if not line.startswith("#")]
    for number, text in expected:
        assert f"data/train.jsonl:{number}: {text}" in result.stderr, (number, text)
    assert "the data is unpaired examples, each labelled desirable or not, but kind = 'lora' trains on demonstrations" in result.stderr
