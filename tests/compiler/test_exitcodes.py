"""The exit statuses are defined once in ftc; the generated script's standalone copy must agree with them."""

import ast
from pathlib import Path

from ftc.compiler import exitcodes

RUN_SUPPORT = Path(__file__).resolve().parents[2] / "templates" / "run_support.py"


def _constants(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def test_the_script_statuses_match_ftcs():
    script = _constants(RUN_SUPPORT)
    assert script["INTERRUPTED"] == exitcodes.EXIT_INTERRUPTED
    assert script["OUT_OF_MEMORY"] == exitcodes.EXIT_OUT_OF_MEMORY
    assert script["DISK_FULL"] == exitcodes.EXIT_DISK_FULL


def test_the_statuses_are_distinct():
    values = [value for name, value in vars(exitcodes).items() if name.startswith("EXIT_")]
    assert len(values) == len(set(values)) == 6
