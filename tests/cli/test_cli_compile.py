"""cli/compile.py: the usage errors of `ftc compile`, `ftc diff` and `ftc eject` (their work is tested in
tests/compiler/: test_check.py, test_diff.py, test_summary.py for `ftc plan`, test_eject.py)."""

from __future__ import annotations

from invoke import invoke

from ftc.cli import compile as compile_verbs


def test_compile_a_missing_spec(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke(capsys, "compile", "missing.toml") == (2, "", "ftc compile: error: spec not found: missing.toml\n")


def test_compile_stops_at_the_specs_problems(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(compile_verbs, "compile_or_report", lambda spec: None)
    assert invoke(capsys, "compile", "spec.toml").code == 1
    assert list(tmp_path.iterdir()) == []


def test_diff_usage_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(capsys, "diff", "a.lock.json", "b.lock.json")
    assert (result.code, result.err) == (2, "ftc diff: error: not found: a.lock.json\n")
    result = invoke(capsys, "diff", ".", "b.lock.json")
    assert result.code == 2
    assert result.err == "ftc diff: error: . has no ftc.lock.json; give a build folder, a run folder, a lock file or a spec (.toml)\n"


def test_diff_an_unreadable_lock(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.lock.json").write_text("{")
    result = invoke(capsys, "diff", "broken.lock.json", "broken.lock.json")
    assert result.code == 1
    assert result.err.startswith("ftc diff: cannot read broken.lock.json: ")


def test_eject_needs_a_build_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(capsys, "eject", "build/nothing", "mine")
    assert result.code == 2
    assert result.err.startswith("ftc eject: error: build/nothing is not a build folder; give one such as")
    assert not (tmp_path / "mine").exists()
