"""cli/serve.py: the usage errors of `ftc merge` and `ftc serve`, caught before any model or vLLM loads
(tests/runtime/test_merge.py and test_serve.py run them for real)."""

from __future__ import annotations

import pytest
from invoke import invoke


def test_merge_needs_a_run_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(capsys, "merge", ".")
    assert result.code == 2
    assert result.err.startswith("ftc merge: error: . is not a run folder (it has no run.json)")
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "ftc.lock.json").write_text("{}")
    result = invoke(capsys, "merge", ".", "--examples", "0")
    assert (result.code, result.err) == (2, "ftc merge: error: --examples must be at least 1\n")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--parity", "-1"], "--parity must be 0 or more"),
        (["--min-agreement", "1.5"], "--min-agreement must be between 0 and 1"),
        (["--prompts", "missing.jsonl"], "--prompts: not found: missing.jsonl"),
        (["--chat-template", "missing.jinja"], "--chat-template: not found: missing.jinja"),
    ],
)
def test_serve_usage_errors(capsys, tmp_path, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(capsys, "serve", "runs/x/1", *flags)
    assert (result.code, result.err) == (2, f"ftc serve: error: {message}\n")
