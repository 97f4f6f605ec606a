"""Gates are parsed by a small grammar and evaluated on numbers; the text never runs as code."""

from __future__ import annotations

import pytest

from ftc.compiler.spec.gates import parse_gate


@pytest.mark.parametrize(
    "text, scores, holds",
    [
        ("tuned.exact_match >= base.exact_match + 0.2", {"tuned": {"exact_match": 0.7}, "base": {"exact_match": 0.4}}, True),
        ("tuned.exact_match >= base.exact_match + 0.2", {"tuned": {"exact_match": 0.5}, "base": {"exact_match": 0.4}}, False),
        ("tuned.json_valid >= 0.95", {"tuned": {"json_valid": 0.96}}, True),
        ("tuned.mmlu >= base.mmlu - 0.02", {"tuned": {"mmlu": 0.40}, "base": {"mmlu": 0.41}}, True),
        ("tuned.mean_length < 80", {"tuned": {"mean_length": 120.0}}, False),
    ],
)
def test_gates_hold_or_fail(text, scores, holds):
    assert parse_gate(text).holds(scores) is holds


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('id')", "tuned.exact_match >= 1; import os", "tuned.exact_match", "exact_match >= 0.5", "tuned.x >= base.y * 2"],
)
def test_anything_else_is_refused(text):
    with pytest.raises(ValueError):
        parse_gate(text)
