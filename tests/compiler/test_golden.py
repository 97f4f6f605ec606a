"""Every spec under specs/ validates and compiles, and its build matches tests/golden/<name>/ byte for byte.

Rewrite the golden folders with `pytest --update-golden` and review the diff like any other change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import GOLDEN_PACKAGES, REPO

from ftc.compiler.build.compile import compile_build
from ftc.compiler.diagnostics import errors
from ftc.compiler.spec.checks import validate

SPECS = sorted((REPO / "specs").glob("*.toml"))
GOLDEN = REPO / "tests" / "golden"


def test_specs_exist():
    names = {p.stem for p in SPECS}
    assert {"quickstart", "full", "lora", "qlora", "dpo"} <= names


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_spec_validates(spec: Path):
    loaded, diags, _ = validate(spec)
    assert loaded is not None and not errors(diags), [d.headline() for d in diags]


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_build_matches_golden(spec: Path, request, monkeypatch):
    monkeypatch.chdir(REPO)
    build = compile_build(spec.relative_to(REPO), root=REPO, packages=GOLDEN_PACKAGES)
    folder = GOLDEN / build.name
    if request.config.getoption("--update-golden"):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for name, text in build.files.items():
            (folder / name).write_text(text, encoding="utf-8", newline="\n")
    expected = {p.name: p.read_text(encoding="utf-8") for p in folder.iterdir()} if folder.is_dir() else {}
    assert sorted(expected) == sorted(build.files), f"files differ from {folder}; run pytest --update-golden and review"
    for name, text in build.files.items():
        assert text == expected[name], f"{build.name}/{name} differs from the golden copy; run pytest --update-golden and review"


def test_compiling_twice_is_byte_identical(monkeypatch):
    monkeypatch.chdir(REPO)
    spec = Path("specs/quickstart.toml")
    first = compile_build(spec, root=REPO, use_cache=False)
    second = compile_build(spec, root=REPO, use_cache=False)
    assert first.files == second.files


def test_lock_is_canonical_and_portable(monkeypatch):
    import json

    monkeypatch.chdir(REPO)
    build = compile_build(Path("specs/quickstart.toml"), root=REPO, packages=GOLDEN_PACKAGES)
    text = build.files["ftc.lock.json"]
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert str(REPO) not in text and "/root" not in text and "/home" not in text
    lock = json.loads(text)
    assert lock["format_version"] == 2
    assert "do not edit" in lock["_generated"]
    for key in ("spec", "data", "model", "chat_template", "templates"):
        assert key in lock["inputs"]
    assert set(lock["packages"]) >= {"torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "lm_eval", "vllm"}
    for forbidden in ("timestamp", "created", "date", "hostname", "user"):
        assert not any(forbidden in k for k in _all_keys(lock)), forbidden


def _all_keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _all_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _all_keys(v)


ALLOWED_IMPORTS = {"torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate", "safetensors"}
ALLOWED_IMPORTS |= {"jsonschema", "rouge_score", "sacrebleu"}  # GRPO's and RLOO's rewards (templates/rewards.py), pinned in the lock


@pytest.mark.parametrize("folder", sorted(p for p in GOLDEN.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_golden_scripts_import_only_the_libraries_and_the_standard_library(folder: Path):
    import ast
    import sys

    tree = ast.parse((folder / "train.py").read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    assert roots - ALLOWED_IMPORTS <= set(sys.stdlib_module_names), roots - ALLOWED_IMPORTS
    text = (folder / "train.py").read_text(encoding="utf-8")
    assert "max_length\"" not in text and "padding=" not in text, "the script must never pad to max_length"
