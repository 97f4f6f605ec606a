"""A generated script reads top to bottom like a hand-written recipe: header, one import block, the constants,
main(), then its helpers and the included support code, and `main()` called at the very end.

The golden scripts are checked (test_golden keeps them equal to what `ftc compile` writes), with the support
files and the `py` filter that shape them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

from ftc.compiler.build import render
from ftc.compiler.build.render import LINE, py_literal, support

GOLDEN_SCRIPTS = sorted((REPO / "tests" / "golden").glob("*/train.py"))
SUPPORT_FILES = ("load_model.py", "prepare.py", "run_support.py")
LONGEST_LINE = 120
QUIET_ON_IMPORT = (
    "logging.getLogger('bitsandbytes.backends.cpu.ops').addFilter(",
    "logging.getLogger('kernels._internals.hf_hub').addFilter(",
    "warnings.filterwarnings('ignore', message=\"You are importing from 'trl.experimental'\")",  # ORPO
)


def _imports(nodes) -> set[tuple]:
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {(alias.name, None, alias.asname) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found |= {(node.module, alias.name, alias.asname) for alias in node.names}
    return found


def _is_import(node) -> bool:
    return isinstance(node, (ast.Import, ast.ImportFrom))


@pytest.mark.parametrize("path", GOLDEN_SCRIPTS, ids=[p.parent.name for p in GOLDEN_SCRIPTS])
def test_script_reads_top_to_bottom(path: Path):
    text = path.read_text(encoding="utf-8")
    body = ast.parse(text).body
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), "the docstring comes first"
    # inside the import block may sit the filters of the notices bitsandbytes (and kernels, for it) log on import
    quiet = [i for i, node in enumerate(body) if isinstance(node, ast.Expr) and ast.unparse(node).startswith(QUIET_ON_IMPORT)]
    assert len(quiet) <= len(QUIET_ON_IMPORT)
    body = [node for i, node in enumerate(body) if i not in quiet]
    first_other = next(i for i, node in enumerate(body[1:], 1) if not _is_import(node))
    assert first_other > 1, "an import block follows the docstring"
    assert not [node.lineno for node in body[first_other:] if _is_import(node)], "one import block, at the top"
    main = next(i for i, node in enumerate(body) if isinstance(node, ast.FunctionDef))
    assert body[main].name == "main", "main() is the first function"
    assert all(isinstance(node, ast.Assign) for node in body[first_other:main]), "only constants before main()"
    last = body[-1]
    assert isinstance(last, ast.If) and ast.unparse(last) == "if __name__ == '__main__':\n    main()"
    lines = text.splitlines()
    assert lines[0].startswith("# ") and lines[2].startswith("# plan: sha256:"), "the header names the plan"
    assert lines[1].startswith("# spec: ")
    long = [(n, len(line)) for n, line in enumerate(lines, 1) if len(line) > LONGEST_LINE]
    assert not long, f"lines over {LONGEST_LINE} characters: {long}"


@pytest.mark.parametrize("path", GOLDEN_SCRIPTS, ids=[p.parent.name for p in GOLDEN_SCRIPTS])
def test_support_code_is_included_without_its_imports(path: Path):
    script = path.read_text(encoding="utf-8")
    imported = _imports(ast.parse(script).body)
    for name in SUPPORT_FILES:
        part = support(name)
        assert part in script
        source = (render.templates_dir() / name).read_text(encoding="utf-8")
        header = source[: len(source) - len(part)]
        needed = _imports(ast.parse(header).body)
        assert needed, f"{name} keeps its imports above its banner"
        assert needed <= imported, f"{name} imports {sorted(needed - imported, key=str)}; add them to the script's import block"


def test_support_files_stay_importable_modules():
    import ftc.templates.prepare as prepare
    import ftc.templates.run_support as run_support

    assert callable(prepare.tokenize_record) and callable(run_support.train_and_save)


def test_support_refuses_a_file_without_a_banner_or_with_an_import_below_it(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "templates_dir", lambda: tmp_path)
    (tmp_path / "plain.py").write_text("import json\n\n\ndef f():\n    return json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no line starting with"):
        support("plain.py")
    (tmp_path / "late.py").write_text("import json\n\n# ---- ftc late ----\nimport os\n", encoding="utf-8")
    with pytest.raises(ValueError, match="imports below its banner"):
        support("late.py")
    (tmp_path / "good.py").write_text('"""Doc."""\nimport json\n\n# ---- ftc good ----\nX = json\n', encoding="utf-8")
    assert support("good.py") == "# ---- ftc good ----\nX = json\n"


def test_a_long_literal_is_wrapped_one_item_per_line():
    estimate = {
        "device": "cuda",
        "peak_memory_gib": 4.72,
        "breakdown_gib": {"weights": 0.269, "gradients": 0.018, "optimizer": 0.036, "activations": 2.27, "logits": 1.125},
        "gpu": {"type": "A100-40GB", "memory_gib": 40.0},
        "modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head", "embed"],
        "pair": (1, 2),
        "empty": {},
    }
    text = py_literal(estimate)
    assert ast.literal_eval(text) == estimate
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and lines[1] == "    'device': 'cuda',"
    assert "    'gpu': {'type': 'A100-40GB', 'memory_gib': 40.0}," in lines  # a short item stays on one line
    assert "    'breakdown_gib': {" in lines and "        'weights': 0.269," in lines  # a long one is wrapped in turn
    assert max(map(len, lines)) <= LINE


def test_a_short_literal_stays_on_one_line():
    assert py_literal({"cpu": "fp32", "cuda": "bf16"}) == "{'cpu': 'fp32', 'cuda': 'bf16'}"
    assert py_literal(["q_proj", "v_proj"]) == "['q_proj', 'v_proj']"
    assert py_literal("x" * 300) == repr("x" * 300)  # a string is never split
    assert py_literal((1,)) == "(1,)"
    long_tuple = tuple(range(40))
    assert ast.literal_eval(py_literal(long_tuple)) == long_tuple
    assert ast.literal_eval(py_literal((tuple(range(40)),))) == (tuple(range(40)),)
