"""Cleaning never loses an example without listing it (a hypothesis property), and the cleaned data, its
report and its hashes flow into the build, the lock and the training script."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from ftc.compiler.build.compile import compile_build, write_build
from ftc.compiler.build.eject import eject
from ftc.compiler.data.clean import Cleaning, clean_records, clean_value
from ftc.compiler.data.read import Record

texts = st.sampled_from(["", " ", "Hi", "hi", " hi  ", "HI", "caf\u00e9", "cafe\u0301", "\uff48\uff49", "a  b", "a b"])
turns = st.lists(st.tuples(st.sampled_from(["user", "assistant"]), texts), min_size=1, max_size=4)
records = st.lists(turns, max_size=25).map(
    lambda rs: [Record(2 * i + 1, {"messages": [{"role": r, "content": c} for r, c in t]}) for i, t in enumerate(rs)]
)
cleanings = st.builds(
    Cleaning,
    dedup=st.sampled_from(["none", "exact", "normalized"]),
    drop_empty_turns=st.booleans(),
    normalize_unicode=st.sampled_from(["none", "NFC", "NFKC"]),
    strip_whitespace=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(records, cleanings)
def test_cleaning_never_loses_an_example_without_listing_it(source, cleaning):
    kept, report = clean_records(source, cleaning, "train.jsonl")
    by_line = {entry["line"]: entry for entry in report}
    assert len(by_line) == len(report)  # at most one entry per example
    kept_lines = [r.line for r in kept]
    assert kept_lines == sorted(kept_lines)  # order is kept
    for record in source:
        entry = by_line.get(record.line)
        if record.line not in kept_lines:
            assert entry and entry["action"] == "removed" and entry["duplicate_of"] in kept_lines
        else:
            value = next(r.value for r in kept if r.line == record.line)
            assert (value != record.value) == (entry is not None and entry["action"] == "changed")
    assert len(kept) + sum(e["action"] == "removed" for e in report) == len(source)
    if not cleaning.active:
        assert kept == source and report == []


def test_each_step_says_what_it_did():
    value = {"messages": [{"role": "user", "content": " cafe\u0301 "}, {"role": "assistant", "content": ""}, {"role": "assistant", "content": "ok"}]}
    cleaned, changes = clean_value(value, Cleaning(drop_empty_turns=True, normalize_unicode="NFC", strip_whitespace=True))
    assert cleaned == {"messages": [{"role": "user", "content": "caf\u00e9"}, {"role": "assistant", "content": "ok"}]}
    assert changes == ["dropped empty turn(s) 2", "Unicode NFC", "stripped whitespace"]


def chat(question: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})


def test_cleaned_data_flows_into_the_build_and_trains(tmp_path, tiny_model):
    lines = [chat(f"ticket {i}: my invoice is wrong", '{"category": "billing"}') for i in range(8)]
    lines += [chat("ticket 1:  My invoice is WRONG ", '{"category": "billing"}')]  # line 9 repeats line 2
    lines += [json.dumps({"messages": [{"role": "system", "content": " "}, {"role": "user", "content": "refund? "}, {"role": "assistant", "content": "billing"}]})]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "spec.toml").write_text(
        f"""
[project]
name = "clean"

[model]
base = "{os.path.relpath(tiny_model, tmp_path)}"

[data]
train = "data/train.jsonl"
validation_split = 0.2
format = "chat"
max_length = 256
dedup = "normalized"
drop_empty_turns = true
strip_whitespace = true

[method]
kind = "lora"
r = 4

[training]
max_steps = 2
batch_size = 2
micro_batch_size = 2
report_to = []

[hardware]
accelerator = "cpu"
""",
        encoding="utf-8",
    )
    build = compile_build(tmp_path / "spec.toml", root=tmp_path)
    cleaning = build.lock.data.cleaning
    assert (cleaning.removed, cleaning.changed) == (1, 1)
    report = [json.loads(line) for line in build.files["data/cleaning-report.jsonl"].splitlines()]
    assert report == [
        {"action": "removed", "duplicate_of": 2, "file": "data/train.jsonl", "line": 9, "reason": "normalized duplicate"},
        {"action": "changed", "file": "data/train.jsonl", "line": 10, "reason": "dropped empty turn(s) 1; stripped whitespace"},
    ]
    assert len(build.files["data/train.jsonl"].text().splitlines()) == 9
    splits = build.lock.data.splits
    assert splits["train"].examples + splits["validation"].examples == 9
    write_build(build)
    written = (build.directory / "data" / "train.jsonl").read_bytes()
    assert hashlib.sha256(written).hexdigest() == build.lock.artifacts["data/train.jsonl"]  # streamed out, as hashed
    checked = subprocess.run([sys.executable, "-m", "ftc.cli", "data", "check", "spec.toml", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    summary = json.loads(checked.stdout)
    assert summary["cleaning"] == {"removed": 1, "changed": 1}  # the check describes the cleaned data, as it trains
    assert {k: s["examples"] for k, s in summary["splits"].items()} == {k: s.examples for k, s in splits.items()}
    assert not any(s["duplicates"]["normalized"] for s in summary["splits"].values())
    assert "data/train.jsonl" in (build.directory / "train.py").read_text(encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(build.directory / "train.py"), "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]  # the script's counts match the lock's: it read the cleaned file
    ejected = eject(build.directory, tmp_path / "mine")
    assert ejected.copies == {"data/train.jsonl": build.directory / "data" / "train.jsonl"}  # what the build trains on


def test_completion_data_converts_to_chat_with_a_system_prompt(tmp_path, tiny_model):
    (tmp_path / "data").mkdir()
    rows = [{"prompt": f"Ticket {i}: my invoice is wrong", "completion": '{"category": "billing"}'} for i in range(6)]
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = f"""
[project]
name = "convert"

[model]
base = "{os.path.relpath(tiny_model, tmp_path)}"

[data]
train = "data/train.jsonl"
max_length = 256
convert_to = "chat"
system_prompt = "You triage support tickets."

[method]
kind = "lora"
r = 4

[training]
max_steps = 1
batch_size = 2
micro_batch_size = 2
report_to = []

[hardware]
accelerator = "cpu"
"""
    (tmp_path / "spec.toml").write_text(spec, encoding="utf-8")
    build = compile_build(tmp_path / "spec.toml", root=tmp_path)
    assert build.lock.data.format == "chat" and build.lock.data.converted_from == "completion"
    first = json.loads(build.files["data/train.jsonl"].text().splitlines()[0])
    assert first == {"messages": [
        {"role": "system", "content": "You triage support tickets."},
        {"role": "user", "content": "Ticket 0: my invoice is wrong"},
        {"role": "assistant", "content": '{"category": "billing"}'},
    ]}
    write_build(build)
    result = subprocess.run(
        [sys.executable, str(build.directory / "train.py"), "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]

    checked = subprocess.run([sys.executable, "-m", "ftc.cli", "data", "check", "spec.toml", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    report = json.loads(checked.stdout)
    assert report["format"] == "completion" and report["splits"]["train"]["tokens"] == build.lock.data.splits["train"].tokens

    # a system prompt that nothing uses is an error, not a silently ignored key
    (tmp_path / "spec.toml").write_text(spec.replace('convert_to = "chat"\n', ""), encoding="utf-8")
    from ftc.compiler.spec.checks import validate

    _, diags, _ = validate(tmp_path / "spec.toml")
    assert any(d.key == "data.system_prompt" and d.is_error for d in diags)
