"""Hostile and careless data files (issue 14, "data contents"): what the reader, the record checks and the
tokenizer pass make of bytes that are not what a data file should hold. Text cases that fit a JSONL or JSON
file are in the broken-data corpus (tests/data/broken/, checked by tests/compiler/test_data_corpus.py); the
cases here are those that cannot be written as such a file (byte order marks, UTF-16, NUL bytes, bare
carriage returns, a line too long to read, CSV and Parquet files), and the command-line runs: `ftc data check`
and `ftc compile` on such data never show a traceback, name file:line, and write nothing outside build/.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from attack import ftc_in_process, snapshot, writes_outside
from conftest import REPO
from ftc.compiler.data import read
from ftc.compiler.data.read import Record, survey
from ftc.compiler.data.tokens import measure

BROKEN = REPO / "tests" / "data" / "broken"
CHAT = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}).encode()
COMPLETION = b'{"prompt": "a", "completion": "x"}'


def chat(*turns: tuple[str, str]) -> bytes:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]}).encode()


def lines(*records: bytes, end: bytes = b"\n") -> bytes:
    return b"".join(r + end for r in records)


def parquet(columns: dict[str, list]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue().to_pybytes()


def problems(path: Path) -> list[tuple[int, str, str | None]]:
    return [(p.line, p.message, p.hint) for p in survey(path, path.name).problems]


# name: (file name, bytes, [(line, part of the message, part of the hint)], records that are well formed)
CASES = {
    "utf8_bom_jsonl": ("d.jsonl", b"\xef\xbb\xbf" + lines(CHAT, CHAT), [(1, "starts with a UTF-8 byte order mark (BOM)", "without a BOM")], 2),
    "utf8_bom_json": ("d.json", b"\xef\xbb\xbf[" + COMPLETION + b"]", [(1, "starts with a UTF-8 byte order mark (BOM)", "without a BOM")], 1),
    "utf16_jsonl": ("d.jsonl", lines(CHAT, CHAT).decode().encode("utf-16"), [(1, "UTF-16", "save it as UTF-8")], 0),
    "utf16_csv": ("d.csv", "prompt,completion\na,x\n".encode("utf-16"), [(1, "UTF-16", "save it as UTF-8")], 0),
    "utf16_no_bom_jsonl": ("d.jsonl", lines(CHAT).decode().encode("utf-16-le"), [(1, "NUL byte at column 2", "UTF-16"), (2, "NUL byte at column 1", "UTF-16")], 0),
    "nul_byte_in_jsonl": ("d.jsonl", lines(CHAT, CHAT.replace(b"hi", b"h\x00i"), CHAT), [(2, "NUL byte at column 45", "UTF-16")], 2),
    "nul_byte_in_csv": ("d.csv", b"prompt,completion\nhel\x00lo,x\nhi,there\n", [(2, "NUL byte at column 4", "UTF-16")], 1),
    "nul_byte_in_json": ("d.json", b"[\n" + COMPLETION + b",\n" + COMPLETION.replace(b"a", b"a\x00") + b"\n]", [(3, "NUL byte at column 14", "UTF-16")], 0),
    "crlf_line_ends": ("d.jsonl", lines(CHAT, CHAT, CHAT, end=b"\r\n"), [], 3),
    "bare_cr_line_ends": ("d.jsonl", lines(CHAT, CHAT, b"{", CHAT, end=b"\r"), [(3, "invalid JSON", None)], 3),
    "mixed_line_ends": ("d.jsonl", CHAT + b"\r" + CHAT + b"\r\n" + b"[]\n" + CHAT, [(3, "got a list", None)], 3),
    "files_joined_with_their_boms": ("d.jsonl", b"\xef\xbb\xbf" + lines(CHAT) + b"\xef\xbb\xbf" + lines(CHAT), [(1, "starts with a UTF-8 byte order mark", None), (2, "a UTF-8 byte order mark (BOM) starts this line", "joining")], 1),
    "pretty_array_named_jsonl": ("d.jsonl", b"[\n" + CHAT + b"\n]\n", [(1, "invalid JSON", "name it .json"), (3, "invalid JSON", None)], 1),
    "csv_with_semicolons": ("d.csv", b"prompt;completion\na;x\n", [(2, "record has prompt;completion", "with commas between cells")], 0),
    "latin1_json_array": ("d.json", b'[\n{"prompt": "caf\xe9", "completion": "x"}\n]', [(2, "not UTF-8: byte 0xe9 at column 16", "UTF-8")], 0),
    "deep_json_array_shape": ("d.json", b"[" * 100_000 + b"]" * 100_000, [(1, "nested more than 100 levels deep", None)], 0),
    "deep_objects_jsonl": ("d.jsonl", lines(CHAT, b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, CHAT), [(2, "nested more than 100 levels deep", None)], 2),
    "csv_200k_character_cell": ("d.csv", b'prompt,completion\nhello,"' + b"y" * 200_000 + b'"\nhi,there\n', [(2, "longer than 131,072 characters", ".jsonl")], 0),
    "csv_cell_too_long_spans_lines": ("d.csv", b'prompt,completion\nhello,"' + b"y\n" * 70_000 + b'"\nhi,there\n', [(2, "longer than 131,072 characters", ".jsonl")], 0),
    "csv_text_after_closing_quote": ("d.csv", b'prompt,completion\na,x\nb,"quoted" and more\nc,z\n', [(3, "invalid CSV", "the rest of the file")], 1),
    "csv_unclosed_quote_names_its_row": ("d.csv", b'prompt,completion\na,x\nb,"never closed\nc,z\n', [(3, "invalid CSV", "the rest of the file")], 1),
    "csv_lone_surrogate_in_messages": ("d.csv", b'messages\n"[{""role"": ""user"", ""content"": ""a\\ud800""}, {""role"": ""assistant"", ""content"": ""b""}]"\n', [(2, "lone surrogate", None)], 0),
    "csv_deep_messages_cell": ("d.csv", b'messages\n"' + b"[" * 5000 + b"]" * 5000 + b'"\n', [(2, "nested more than 100 levels deep", None)], 0),
    "csv_nan_in_messages_cell": ("d.csv", b'messages\n"[{""role"": ""user"", ""content"": NaN}]"\n', [(2, "column 'messages' holds NaN", "missing values")], 0),
    "parquet_timestamp_column": (
        "d.parquet", parquet({"prompt": ["a"], "completion": ["x"], "at": [datetime.datetime(2020, 1, 1)]}), [(1, "column 'at' holds a datetime", "text")], 0),
    "parquet_binary_prompt": ("d.parquet", parquet({"prompt": [b"a"], "completion": ["x"]}), [(1, "column 'prompt' holds bytes", "text")], 0),
    "parquet_nan_cell": ("d.parquet", parquet({"prompt": ["a", "b"], "completion": ["x", "y"], "score": [float("nan"), 1.0]}), [(1, "column 'score' holds NaN", None), (2, "unknown field 'score'", None)], 0),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_hostile_bytes_are_named_at_their_line(case, tmp_path):
    name, data, want, good = CASES[case]
    path = tmp_path / name
    path.write_bytes(data)
    got = problems(path)
    for line, part, hint in want:
        matching = [(m, h) for n, m, h in got if n == line and part in m]
        assert matching, f"line {line}: expected {part!r}, got {got}"
        assert hint is None or hint in (matching[0][1] or ""), f"line {line}: hint {matching[0][1]!r} lacks {hint!r}"
    assert len(got) == len(want), got
    assert survey(path, path.name).records == good


def test_a_line_too_long_to_read_is_skipped_and_named(tmp_path, monkeypatch):
    """The limit is 64 MiB; the shape is the same at 1 KiB, so the test sets the limit low rather than write 64 MiB."""
    monkeypatch.setattr(read, "MAX_LINE_BYTES", 1024)
    path = tmp_path / "giant.jsonl"
    path.write_bytes(lines(CHAT, b'{"text": "' + b"x" * 5000 + b'"}', CHAT, b"x" * 3000, CHAT))
    assert problems(path) == [
        (2, "line 2 is longer than 1 KiB: it is not read", "one record per line; split it into several examples, or check that the file has line breaks"),
        (4, "line 4 is longer than 1 KiB: it is not read", "one record per line; split it into several examples, or check that the file has line breaks"),
    ]
    assert survey(path, path.name).records == 3


def test_careless_data_hints_name_the_likely_fix():
    found = {p.line: p for p in survey(BROKEN / "careless.jsonl", "careless.jsonl").problems}
    assert found[2].hint == "did you mean 'messages'? keys are case-sensitive"
    assert found[4].hint == "did you mean 'user'? roles are lowercase, without spaces"
    assert found[5].hint == "did you mean 'assistant'? roles are lowercase, without spaces"
    assert "join the text parts into one string" in found[6].hint
    assert "ShareGPT" in found[9].hint and "Alpaca" in found[10].hint
    assert ".json" in found[8].hint  # a JSON array on one line of a .jsonl file


def test_keys_that_could_move_the_terminal_are_shown_quoted(tmp_path):
    """A key holding an escape sequence would recolour or rewrite the user's terminal if printed raw."""
    path = tmp_path / "escape.jsonl"
    path.write_bytes(lines(CHAT, json.dumps({"\x1b[2J\x1b[31mmessages": [], "text ": "x "}).encode()))
    [(line, message, _)] = problems(path)
    assert line == 2 and "\x1b" not in message
    assert message.startswith("record has '\\x1b[2J\\x1b[31mmessages', 'text '; expected")


def test_a_100k_turn_conversation_is_refused_quickly(tmp_path):
    turns = [("user" if i % 2 == 0 else "assistant", f"w{i}") for i in range(100_000)]
    path = tmp_path / "long.jsonl"
    path.write_bytes(lines(CHAT, chat(*turns)))
    assert problems(path) == [(2, "messages has 100000 turns, more than 1000", "split it into shorter conversations, one per line: tokenizing a conversation takes time that grows with the square of its turns")]


def test_a_record_without_the_format_fields_says_which_field_it_lacks():
    """The tokenizer pass names the missing field, not Python's KeyError text ('messages')."""
    from tiny import make_tokenizer

    records = [Record(1, json.loads(CHAT)), Record(2, {"prompt": "a", "completion": "b"})]
    stats = measure("train", records, make_tokenizer(), None, "chat", max_length=64, overlong="error", train_on_all=False, workers=1)
    assert stats.examples == 1
    assert stats.failed == [(2, "it has no 'messages' field, which chat data has")]


def project(root: Path, tiny_model: Path, name: str, data: bytes, fmt: str, validation: tuple[str, bytes] | None = None) -> None:
    root.mkdir(exist_ok=True)
    (root / name).write_bytes(data)
    extra = ""
    if validation is not None:
        (root / validation[0]).write_bytes(validation[1])
        extra = f'validation = "{validation[0]}"\n'
    (root / "spec.toml").write_text(
        f'[project]\nname = "hostile"\n\n[model]\nbase = "{os.path.relpath(tiny_model, root)}"\n\n'
        f'[data]\ntrain = "{name}"\n{extra}format = "{fmt}"\nmax_length = 64\n\n[method]\nkind = "lora"\n',
        encoding="utf-8",
    )


RUNS = {
    "utf8_bom": ("train.jsonl", b"\xef\xbb\xbf" + lines(CHAT, CHAT), "chat", "train.jsonl:1: "),
    "lone_surrogate": ("train.jsonl", lines(CHAT, chat(("user", "a\ud800"), ("assistant", "b"))), "chat", "train.jsonl:2: "),
    "deep_nesting": ("train.jsonl", lines(CHAT, b"[" * 20_000 + b"]" * 20_000), "chat", "train.jsonl:2: "),
    "huge_number": ("train.jsonl", lines(CHAT, b'{"text": 1' + b"0" * 5000 + b"}"), "chat", "train.jsonl:2: "),
    "nan": ("train.jsonl", lines(CHAT, b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": NaN}]}'), "chat", "train.jsonl:2: "),
    "bare_values": ("train.jsonl", lines(CHAT, b'"hi"', b"3", b"null"), "chat", "train.jsonl:4: "),
    "bare_cr": ("train.jsonl", lines(CHAT, CHAT, b"{", end=b"\r"), "chat", "train.jsonl:3: "),
    "nul_bytes": ("train.jsonl", lines(CHAT, b"\x00" * 64), "chat", "train.jsonl:2: "),
    "json_deep_array": ("train.json", b"[" * 100_000 + b"]" * 100_000, "completion", "train.json:1: "),
    "json_latin1": ("train.json", b'[{"prompt": "caf\xe9", "completion": "x"}]', "completion", "train.json:1: "),
    "json_unclosed": ("train.json", b"[" + COMPLETION + b",", "completion", "train.json:1: "),
    "csv_long_cell": ("train.csv", b'prompt,completion\nhello,"' + b"y" * 200_000 + b'"\n', "completion", "train.csv:2: "),
    "parquet_timestamp": ("train.parquet", parquet({"prompt": ["a"], "completion": ["x"], "at": [datetime.datetime(2020, 1, 1)]}), "completion", "train.parquet:row 1: "),
    "turns_100k": ("train.jsonl", lines(CHAT, chat(*[("user" if i % 2 == 0 else "assistant", "w") for i in range(100_000)])), "chat", "train.jsonl:2: "),
}


@pytest.mark.parametrize("case", RUNS, ids=list(RUNS))
@pytest.mark.parametrize("verb", [("data", "check"), ("compile",)], ids=["data-check", "compile"])
def test_the_command_line_names_the_line_and_writes_nothing_else(case, verb, tmp_path, tiny_model):
    name, data, fmt, where = RUNS[case]
    root = tmp_path / "project"
    project(root, tiny_model, name, data, fmt)
    before = snapshot(root)
    outcome = ftc_in_process(*verb, "spec.toml", cwd=root)
    assert outcome.traceback is None, str(outcome)
    assert outcome.code == 1, str(outcome)
    assert where in outcome.stderr, str(outcome)
    assert "Traceback" not in outcome.stderr and "TextEncodeInput" not in outcome.stderr, str(outcome)
    assert writes_outside(before, snapshot(root), "build/hostile") == []


def test_an_unreadable_parquet_file_gives_no_false_errors_on_the_valid_one_beside_it(tmp_path, tiny_model):
    good = parquet({"prompt": [f"q{i}" for i in range(60)], "completion": ["x"] * 60})
    root = tmp_path / "project"
    project(root, tiny_model, "train.parquet", b"PAR1 not really", "completion", validation=("val.parquet", good))
    outcome = ftc_in_process("data", "check", "spec.toml", cwd=root)
    assert outcome.traceback is None and outcome.code == 1, str(outcome)
    assert "train.parquet:row 1: cannot read the Parquet file" in outcome.stderr
    assert "val.parquet:" not in outcome.stderr, str(outcome)


def test_a_record_of_another_format_is_reported_once(tmp_path, tiny_model):
    root = tmp_path / "project"
    project(root, tiny_model, "train.jsonl", lines(CHAT, COMPLETION, CHAT), "chat")
    outcome = ftc_in_process("data", "check", "spec.toml", cwd=root)
    assert outcome.traceback is None and outcome.code == 1, str(outcome)
    assert "train.jsonl:2: record is completion data, but the file is chat data" in outcome.stderr
    assert "cannot be tokenized" not in outcome.stderr, str(outcome)


@pytest.mark.parametrize("corpus", ["values.jsonl", "careless.jsonl"])
def test_the_corpus_through_validate(corpus, tmp_path, tiny_model):
    """The corpus files of the text cases, through `ftc validate`: their lines named, no traceback."""
    root = tmp_path / "project"
    project(root, tiny_model, "train.jsonl", (BROKEN / corpus).read_bytes(), "chat")
    outcome = ftc_in_process("validate", "spec.toml", cwd=root)
    assert outcome.traceback is None and outcome.code == 1, str(outcome)
    assert "train.jsonl:2: " in outcome.stderr, str(outcome)
