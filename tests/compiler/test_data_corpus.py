"""The broken-data corpus: tests/data/broken/<file> holds examples, good and bad; <file>.expected lists, per
line, the problem that line must produce. Every listed problem must be reported at its line, and no line
that is not listed may produce one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from ftc.compiler.data.read import survey

CORPUS = REPO / "tests" / "data" / "broken"
FILES = sorted(p for p in CORPUS.iterdir() if p.suffix in (".jsonl", ".json"))


def expected(path: Path) -> dict[int, str]:
    table = {}
    for line in path.with_name(path.name + ".expected").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            number, _, text = line.partition(": ")
            table[int(number)] = text
    return table


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_bad_line_is_reported_where_it_is(path):
    want = expected(path)
    got: dict[int, list[str]] = {}
    for problem in survey(path, path.name).problems:
        assert str(problem).startswith(f"{path.name}:{problem.line}: ")
        got.setdefault(problem.line, []).append(problem.message)
    for line, text in want.items():
        assert any(text in message for message in got.get(line, [])), f"line {line}: expected {text!r}, got {got.get(line)}"
    unexpected = {line: messages for line, messages in got.items() if line not in want}
    assert not unexpected, f"problems on lines that should be clean: {unexpected}"


def test_the_corpus_covers_at_least_25_kinds_of_bad_input():
    kinds = set()
    for path in FILES:
        for text in expected(path).values():
            kinds.add(re.sub(r"(turn \d+|'[^']*'|\d+)", "_", text))  # the same kind at another turn or value
    assert len(kinds) >= 25, sorted(kinds)


def test_hints_name_the_likely_fix():
    problems = {p.line: p for p in survey(CORPUS / "chat.jsonl", "chat.jsonl").problems}
    assert problems[2].hint == "did you mean 'assistant'?"  # bot
    assert problems[3].hint == "did you mean 'assistant'?"  # assistent
    assert problems[27].hint == "did you mean 'user'?"  # human


def test_the_bundled_data_has_no_problems():
    for path in sorted((REPO / "specs" / "data").rglob("*.jsonl")):
        assert survey(path, path.name).problems == (), path
