"""The diagnostics corpus: every spec under tests/invalid/ carries its expected diagnostics as comments.

An offending line ends in `# ERROR: <summary>` (or `# WARNING: <summary>`), where the summary is part of
the diagnostic's message. A line may carry several annotations when one key draws several diagnostics.
The test checks both ways: each annotated line got a diagnostic of that severity whose message contains
the summary, and no line got a diagnostic it was not annotated for.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ftc.compiler.diagnostics import Diagnostic
from ftc.compiler.spec.checks import validate

TESTS = Path(__file__).resolve().parent.parent
CORPUS = TESTS / "invalid"
VALID_SPEC = TESTS / "fixtures" / "valid_spec.toml"
REPO = TESTS.parent
CASES = sorted(CORPUS.glob("*.toml"))

_ANNOTATION = re.compile(r"#\s*(ERROR|WARNING):\s*(.*?)\s*(?=#\s*(?:ERROR|WARNING):|$)")
_HEADLINE = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): (?P<key>[\w.-]+): ")


@dataclass(frozen=True)
class Expected:
    line: int
    severity: str  # "error" or "warning"
    summary: str


def annotations(path: Path) -> list[Expected]:
    found = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for label, summary in _ANNOTATION.findall(text):
            found.append(Expected(number, label.lower(), summary))
    return found


def diagnostics(path: Path) -> list[Diagnostic]:
    _, diags, _ = validate(path)
    return diags


def _listing(diags: list[Diagnostic]) -> str:
    return "\n".join(f"  {d.headline()}" for d in sorted(diags, key=lambda d: (d.line, d.col))) or "  (none)"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_case(path: Path) -> None:
    expected = annotations(path)
    assert expected, f"{path.name} has no # ERROR: or # WARNING: annotation"
    diags = diagnostics(path)
    got = {(d.line, d.severity) for d in diags}
    want = {(e.line, e.severity) for e in expected}
    assert got == want, (
        f"{path.name}: diagnostics on the wrong lines\n"
        f"  unexpected: {sorted(got - want)}\n  missing: {sorted(want - got)}\n{_listing(diags)}"
    )
    for e in expected:
        messages = [d.message for d in diags if d.line == e.line and d.severity == e.severity]
        assert any(e.summary in m for m in messages), (
            f"{path.name}:{e.line}: no {e.severity} containing {e.summary!r}\n{_listing(diags)}"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    for d in diags:
        assert 1 <= d.line <= len(lines) and d.col >= 1, d.headline()
        assert d.key or d.message.startswith("invalid TOML"), f"no key: {d.headline()}"
        if d.is_error:
            assert d.hint, f"error without a hint: {d.headline()}"


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
    assert diags == [], _listing(diags)


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
