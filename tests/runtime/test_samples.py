"""Base versus tuned answers on held-out examples, for an adapter run and a full run."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from tiny_runs import trained_run

from ftc.runtime.evaluate.samples import SAMPLES, compare_answers, print_comparison


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model):
    """trained(method) -> the folder of a finished 2-step run (shared by every test module in the session)."""
    return lambda method: trained_run(tmp_path_factory, tiny_model, method)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_compare_answers(trained, method):
    run_dir = trained(method)
    rows = compare_answers(run_dir, n=2, max_new_tokens=8)
    assert len(rows) == 2
    for row in rows:
        assert set(row) == {"source", "prompt", "reference", "base", "tuned"}
        assert all(isinstance(value, str) and value for value in row.values()), row
    assert rows[0]["source"] == "data/val.jsonl:1"
    assert rows[0]["reference"].startswith('{"category"')
    saved = json.loads((run_dir / SAMPLES).read_text())
    assert saved["samples"] == rows and saved["examples_from"] == "validation"

    for width in (140, 80):  # side by side, then one under another
        buffer = io.StringIO()
        print_comparison(Console(file=buffer, width=width), rows)
        text = buffer.getvalue()
        assert (
            "example 2 (data/val.jsonl:2)" in text
            and "reference" in text
            and "tuned" in text
        )


def test_print_comparison_without_rows():
    buffer = io.StringIO()
    print_comparison(Console(file=buffer), [])
    assert "no held-out examples" in buffer.getvalue()


def test_model_output_is_not_markup():
    buffer = io.StringIO()
    row = {
        "source": "x:1",
        "prompt": "[bold]p[/bold]",
        "reference": "[red]r",
        "base": "   ",
        "tuned": "[/]",
    }
    print_comparison(Console(file=buffer, width=140), [row])
    text = buffer.getvalue()
    assert "[bold]p[/bold]" in text and "[/]" in text and "(blank)" in text
