"""The diagnostics corpus: every spec under tests/invalid/ carries its expected diagnostics as comments
(the annotation format is in tests/annotated.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from annotated import check_annotated, diagnostics, listing

TESTS = Path(__file__).resolve().parent.parent
CORPUS = TESTS / "invalid"
VALID_SPEC = TESTS / "fixtures" / "valid_spec.toml"
REPO = TESTS.parent
CASES = sorted(CORPUS.glob("*.toml"))

_HEADLINE = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): (?P<key>[\w.-]+): ")


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_case(path: Path) -> None:
    check_annotated(path)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_case_says_what_is_wrong(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and len(first) > 10, f"{path.name} should open with a comment naming the mistake"


def test_corpus_is_broad() -> None:
    assert len(CASES) >= 30
    pairs = set()
    for path in CASES:
        for d in diagnostics(path):
            pairs.add((d.key, " ".join(d.message.split()[:3])))
    assert len(pairs) >= 30, sorted(pairs)


def test_valid_spec_has_no_diagnostics() -> None:
    diags = diagnostics(VALID_SPEC)
    assert diags == [], listing(diags)


# -- the command line -------------------------------------------------------------------------------


def ftc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftc.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("case", ["misspelled_key", "batch_size_not_multiple", "train_file_missing"])
def test_cli_reports_errors_with_position_and_key(case: str) -> None:
    rel = f"tests/invalid/{case}.toml"
    result = ftc("validate", rel)
    assert result.returncode == 1, result.stderr
    headlines = [line for line in result.stderr.splitlines() if _HEADLINE.match(line)]
    assert headlines, result.stderr
    first = result.stderr.splitlines()[0]
    m = _HEADLINE.match(first)
    assert m, f"first stderr line is not `file:line:col: key: ...`: {first!r}"
    diags = diagnostics(REPO / rel)
    assert m["file"] == rel
    assert {(int(h["line"]), h["key"]) for h in map(_HEADLINE.match, headlines)} == {(d.line, d.key) for d in diags}
    assert "^" in result.stderr and "= hint:" in result.stderr


def test_cli_valid_spec_exits_zero() -> None:
    result = ftc("validate", str(VALID_SPEC.relative_to(REPO)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "valid" in result.stdout


def test_cli_warnings_alone_exit_zero() -> None:
    result = ftc("validate", "tests/invalid/learning_rate_too_high.toml")
    assert result.returncode == 0, result.stderr
    assert "warning: learning_rate" in result.stderr


@pytest.mark.parametrize(
    "args",
    [("validate", "tests/invalid/no_such_spec.toml"), ("validate", "tests/invalid"), ("frobnicate",), ()],
    ids=["missing-file", "folder", "unknown-verb", "no-verb"],
)
def test_cli_usage_errors_exit_two(args: tuple[str, ...]) -> None:
    result = ftc(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip()
