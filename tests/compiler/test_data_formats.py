"""CSV and Parquet data files: the bundled JSONL data, converted, reads to the same records; problems name the
line (CSV) or row (Parquet) they are on; the generated script reads the same values; and a build whose train
file is CSV and validation file Parquet trains."""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from ftc.compiler.build.compile import compile_build, write_build
from ftc.compiler.data.read import DataProblem, Record, iter_records, survey

DATA = REPO / "specs" / "data"


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


def _rows(fmt: str) -> list[dict]:
    if fmt == "chat":
        return _jsonl("ticket_triage/train.jsonl")
    if fmt == "completion":
        return _jsonl("ticket_triage/prompt_completion.jsonl")
    if fmt == "preference":
        return _jsonl("ticket_triage_prefs/train.jsonl")
    if fmt == "unpaired":  # a CSV cell holds text: its label true or false reads back as the boolean
        return _jsonl("ticket_triage_kto/train.jsonl")
    return [{"text": r["prompt"] + r["completion"]} for r in _jsonl("ticket_triage/prompt_completion.jsonl")]


def write_csv(path: Path, rows: list[dict]) -> list[int]:
    """Write rows under a header, lists as JSON text; return the line each row starts on, counted independently."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    starts = []
    for row in rows:
        starts.append(out.getvalue().count("\n") + 1)
        writer.writerow({k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items()})
    path.write_text(out.getvalue(), encoding="utf-8", newline="")
    return starts


def write_parquet(path: Path, rows: list[dict]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def read(path: Path) -> list[Record | DataProblem]:
    return list(iter_records(path, path.name))


@pytest.mark.parametrize("fmt", ["chat", "completion", "preference", "unpaired", "text"])
def test_csv_and_parquet_read_to_the_jsonl_records(fmt, tmp_path):
    rows = _rows(fmt)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    starts = write_csv(tmp_path / "data.csv", rows)
    write_parquet(tmp_path / "data.parquet", rows)
    want = [r.value for r in read(jsonl)]
    assert want == rows
    from_csv, from_parquet = read(tmp_path / "data.csv"), read(tmp_path / "data.parquet")
    assert [r.value for r in from_csv] == want
    assert [r.value for r in from_parquet] == want
    assert [r.line for r in from_csv] == starts
    assert (starts[-1] > len(rows) + 1) == (fmt in ("completion", "text"))  # their prompts hold line breaks
    assert [(r.line, r.unit) for r in from_parquet] == [(i, "row") for i in range(1, len(rows) + 1)]
    for name in ("data.csv", "data.parquet"):
        found = survey(tmp_path / name, name)
        assert (found.format, found.records, found.problems) == (fmt, len(rows), ())


def test_csv_lines_count_a_quoted_cell_that_spans_lines(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_bytes(b'prompt,completion\r\n"Ticket: first line\r\nsecond line\r\nthird",billing\r\n\r\nplain,"a, b"\r\n')
    records = read(path)
    assert [(r.line, r.value) for r in records] == [
        (2, {"prompt": "Ticket: first line\r\nsecond line\r\nthird", "completion": "billing"}),
        (6, {"prompt": "plain", "completion": "a, b"}),  # line 5 is blank and skipped
    ]


def test_ragged_rows_and_bad_utf8_are_problems_at_their_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"\xef\xbb\xbfprompt,completion\n"  # a byte-order mark (Excel writes one) is not part of the header
        b"ok,fine\n"
        b"one cell only\n"  # 3: too few cells
        b"a,b,c\n"  # 4: too many
        b'"spans\n'
        b'two lines \xff",x\n'  # 6: the bad byte, in the second line of the row that starts on 5
        b"caf\xc3\xa9,ok\n"  # 7: good UTF-8
        b",\n"  # 8: empty cells are empty strings, for the record checks to report
    )
    items = read(path)
    problems = {p.line: str(p) for p in items if isinstance(p, DataProblem)}
    assert problems == {
        3: "bad.csv:3: row has 1 cells, the header has 2",
        4: "bad.csv:4: row has 3 cells, the header has 2",
        6: "bad.csv:6: invalid UTF-8: byte 0xff (column 11)",
    }
    records = [(r.line, r.value) for r in items if isinstance(r, Record)]
    assert records == [(2, {"prompt": "ok", "completion": "fine"}), (7, {"prompt": "café", "completion": "ok"}), (8, {"prompt": "", "completion": ""})]
    assert {p.line for p in survey(path, "bad.csv").problems} == {3, 4, 6, 8}


def test_a_bad_header_stops_the_file(tmp_path):
    (tmp_path / "dup.csv").write_text("text,text\na,b\n", encoding="utf-8")
    (tmp_path / "latin1.csv").write_bytes(b"t\xe9xt\nhello\n")
    assert [str(p) for p in read(tmp_path / "dup.csv")] == ["dup.csv:1: the header row must name each column once"]
    assert [str(p) for p in read(tmp_path / "latin1.csv")] == ["latin1.csv:1: invalid UTF-8: byte 0xe9 (column 2)"]


def test_json_text_in_cells(tmp_path):
    path = tmp_path / "cells.csv"
    turns = [{"role": "user", "content": "hi"}]
    write_csv(path, [
        {"prompt": "[urgent] my order is late", "completion": '[{"sku": 1}]'},  # text that only looks like JSON
        {"prompt": json.dumps(turns), "completion": " fine"},  # a conversation as JSON text
    ])
    assert [r.value["prompt"] for r in read(path)] == ["[urgent] my order is late", turns]
    assert read(path)[0].value["completion"] == '[{"sku": 1}]'
    chat = tmp_path / "chat.csv"
    chat.write_text('messages\n"[{""role"": ""user""}"\n', encoding="utf-8")
    [problem] = read(chat)
    assert str(problem) == "chat.csv:2: the messages cell is not JSON: Expecting ',' delimiter (character 18)"


def test_parquet_problems_name_the_row(tmp_path):
    path = tmp_path / "turns.parquet"
    messages = [{"role": "user", "content": "Where is my parcel?"}, {"role": "assistant", "content": "On its way.", "weight": 1}]
    write_parquet(path, [{"messages": messages}, {"messages": messages[:1]}])
    first = read(path)[0]
    assert first.value["messages"][0] == messages[0]  # the struct's null weight is an absent one
    assert [str(p) for p in survey(path, "turns.parquet").problems] == ["turns.parquet:row 2: the last turn is a user turn"]
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    [problem] = read(tmp_path / "broken.parquet")
    assert str(problem).startswith("broken.parquet:row 1: cannot read the Parquet file")


def _script_reader(script: Path):
    """read_records of a generated script, with the helpers it calls, taken out of the script's syntax tree."""
    names = {"read_records", "record_from_row", "CONVERSATION_COLUMNS", "UNPAIRED_COLUMNS"}
    body = [
        node for node in ast.parse(script.read_text(encoding="utf-8")).body
        if getattr(node, "name", None) in names or (isinstance(node, ast.Assign) and node.targets[0].id in names)
    ]
    assert len(body) == len(names), script
    namespace = {"csv": csv, "json": json, "Dataset": datasets.Dataset}
    exec(compile(ast.Module(body, type_ignores=[]), str(script), "exec"), namespace)
    return namespace["read_records"]


@pytest.mark.parametrize("golden", ["quickstart", "triage-dpo"])
def test_the_generated_script_reads_the_same_records(golden, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    read_records = _script_reader(REPO / "tests" / "golden" / golden / "train.py")
    rows = _rows("preference" if golden == "triage-dpo" else "chat")[:40]
    write_parquet(tmp_path / "d.parquet", rows)  # a column holds one type: message lists here
    if golden == "triage-dpo":
        rows.insert(1, {"prompt": "[urgent] where is it?\nnow", "chosen": " shipping", "rejected": ""})
    else:
        rows.insert(1, {"messages": [{"role": "user", "content": "café, \"quoted\"\n"}, {"role": "assistant", "content": "ok", "weight": 0}]})
    write_csv(tmp_path / "d.csv", rows)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    for name in ("d.csv", "d.parquet", "d.jsonl", "d.json"):
        path = tmp_path / name
        assert read_records(path) == [r.value for r in read(path)], name


def test_a_csv_train_file_and_a_parquet_validation_file_train(tmp_path, tiny_model, monkeypatch):
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "train.csv", _rows("chat")[:24])
    write_parquet(tmp_path / "data" / "val.parquet", _jsonl("ticket_triage/val.jsonl")[-6:])
    (tmp_path / "spec.toml").write_text(
        f"""
[project]
name = "tiny-tables"
seed = 3

[model]
base = "{os.path.relpath(tiny_model, tmp_path)}"

[data]
train = "data/train.csv"
validation = "data/val.parquet"
format = "chat"
max_length = 1024

[method]
kind = "lora"
r = 4
lora_alpha = 8

[training]
max_steps = 2
learning_rate = 2e-4
batch_size = 4
micro_batch_size = 2
logging_steps = 1
report_to = []

[hardware]
accelerator = "cpu"
""",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    build = compile_build(Path("spec.toml"), root=tmp_path)
    write_build(build)
    result = subprocess.run(
        [sys.executable, str(build.directory / "train.py"), "--output-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", HF_DATASETS_CACHE=str(tmp_path / "hf-cache")),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "train: 24 examples" in result.stdout and "validation: 6 examples" in result.stdout
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
