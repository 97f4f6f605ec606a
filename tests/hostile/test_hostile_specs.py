"""The hostile spec corpus: tests/hostile/specs/*.toml, each a careless or hostile spec found by attacking
ftc as a stranger would, annotated like tests/invalid/ (format in tests/annotated.py). Each case is checked
twice: its diagnostics are exactly the annotated ones, and `ftc validate` on the command line refuses it
(or, for warnings alone, accepts it) without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from annotated import annotations, check_annotated
from attack import ftc_in_process

CORPUS = Path(__file__).resolve().parent / "specs"
CASES = sorted(CORPUS.glob("*.toml"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_hostile_spec(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and len(first) > 10, f"{path.name} should open with a comment naming the attack"
    check_annotated(path)
    outcome = ftc_in_process("validate", path.name, cwd=path.parent)
    assert outcome.traceback is None, str(outcome)
    errors = any(a.severity == "error" for a in annotations(path))
    assert outcome.code == (1 if errors else 0), str(outcome)
    assert outcome.located, str(outcome)
