"""cli/spec.py: `ftc validate`, `ftc schema` and `ftc init` (whose starter specs tests/compiler/test_init.py checks)."""

from __future__ import annotations

import json

from invoke import invoke


def test_validate_a_valid_spec(capsys, repo, monkeypatch):
    monkeypatch.chdir(repo)
    result = invoke(capsys, "validate", "specs/quickstart.toml")
    assert result.code == 0
    assert result.out == "specs/quickstart.toml: valid\n"


def test_validate_an_invalid_spec(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text("[project]\nnmae = 'x'\n")
    result = invoke(capsys, "validate", "bad.toml")
    assert result.code == 1
    assert "bad.toml:2:1" in result.err


def test_validate_usage_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke(capsys, "validate", "missing.toml") == (2, "", "ftc validate: error: spec not found: missing.toml\n")
    result = invoke(capsys, "validate", ".")
    assert (result.code, result.err) == (2, "ftc validate: error: . is a folder; give the spec file (.toml)\n")


def test_schema_prints_json_schema(capsys):
    result = invoke(capsys, "schema")
    assert result.code == 0
    schema = json.loads(result.out)
    assert {"project", "model", "data", "method", "training"} <= set(schema["properties"])


def test_init_refuses_to_overwrite_without_force(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ftc.toml").write_text("# mine\n")
    result = invoke(capsys, "init", "--name", "demo")
    assert result.code == 1
    assert "ftc init: ftc.toml already exists; pass --force" in result.err
    assert (tmp_path / "ftc.toml").read_text() == "# mine\n"


def test_init_a_bad_name_is_a_usage_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(capsys, "init", "--name", "Bad Name!")
    assert result.code == 2 and result.err.startswith("ftc init: error: project name 'Bad Name!'")
    assert list(tmp_path.iterdir()) == []
