"""Annotated spec corpora (tests/invalid/, tests/hostile/specs/): each offending line ends in
`# ERROR: <summary>` or `# WARNING: <summary>`, where the summary is part of the diagnostic's message.
A line may carry several annotations when one key draws several diagnostics.

`check_annotated` checks both ways: each annotated line got a diagnostic of that severity whose message
contains the summary, and no line got a diagnostic it was not annotated for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ftc.compiler.diagnostics import Diagnostic
from ftc.compiler.spec.checks import validate

_ANNOTATION = re.compile(r"#\s*(ERROR|WARNING):\s*(.*?)\s*(?=#\s*(?:ERROR|WARNING):|$)")


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


def listing(diags: list[Diagnostic]) -> str:
    return "\n".join(f"  {d.headline()}" for d in sorted(diags, key=lambda d: (d.line, d.col))) or "  (none)"


def check_annotated(path: Path) -> list[Diagnostic]:
    """Assert that `validate(path)` gives exactly the annotated diagnostics; return them."""
    expected = annotations(path)
    assert expected, f"{path.name} has no # ERROR: or # WARNING: annotation"
    diags = diagnostics(path)
    got = {(d.line, d.severity) for d in diags}
    want = {(e.line, e.severity) for e in expected}
    assert got == want, (
        f"{path.name}: diagnostics on the wrong lines\n"
        f"  unexpected: {sorted(got - want)}\n  missing: {sorted(want - got)}\n{listing(diags)}"
    )
    for e in expected:
        messages = [d.message for d in diags if d.line == e.line and d.severity == e.severity]
        assert any(e.summary in m for m in messages), f"{path.name}:{e.line}: no {e.severity} containing {e.summary!r}\n{listing(diags)}"
    lines = path.read_text(encoding="utf-8").splitlines()
    for d in diags:
        assert 1 <= d.line <= len(lines) and d.col >= 1, d.headline()
        assert d.key or d.message.startswith("invalid TOML"), f"no key: {d.headline()}"
        if d.is_error:
            assert d.hint, f"error without a hint: {d.headline()}"
    return diags
