"""The layers and their sizes (STYLE.md, "Where things go"), read from the source with `ast`.

compiler/ turns a spec into a build and imports neither the runtime nor the command line; runtime/ may use the
compiler but not the command line; cli/ sits above both. Templates are copied into scripts that run without ftc,
so they import nothing from it. Every import counts, the lazy ones inside functions included.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"compiler": "ftc.compiler", "runtime": "ftc.runtime", "cli": "ftc.cli", "templates": "ftc.templates"}
FORBIDDEN = {
    "compiler": ("ftc.runtime", "ftc.cli"),
    "runtime": ("ftc.cli",),
    "templates": ("ftc",),
}
MAX_LINES = 500


def modules(root: Path, folder: str) -> list[Path]:
    return sorted(p for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(root: Path, path: Path) -> str:
    """`compiler/plan/resolve.py` -> `ftc.compiler.plan.resolve`; a package's __init__.py is the package."""
    folder, *rest = path.relative_to(root).with_suffix("").parts
    if rest and rest[-1] == "__init__":
        rest = rest[:-1]
    return ".".join([PACKAGES[folder], *rest])


def imports(root: Path, path: Path) -> set[str]:
    """Every module `path` imports, as an absolute name, wherever the statement stands.

    `from a.b import c` counts as importing both `a.b` and `a.b.c`, since c may be a module; a literal
    `importlib.import_module("...")` or `__import__("...")` counts too."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def layer_violations(root: Path) -> list[str]:
    """Every import that crosses a layer the wrong way, as "<module file> imports <module>"."""
    problems = []
    for folder, banned in FORBIDDEN.items():
        for path in modules(root, folder):
            for imported in sorted(imports(root, path)):
                if any(imported == b or imported.startswith(b + ".") for b in banned):
                    problems.append(f"{path.relative_to(root)} imports {imported}")
    return problems


def oversized(root: Path, limit: int = MAX_LINES) -> list[str]:
    problems = []
    for folder in PACKAGES:
        for path in modules(root, folder):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > limit:
                problems.append(f"{path.relative_to(root)}: {lines} lines")
    return problems


def test_the_layers_import_downwards_only():
    found = layer_violations(ROOT)
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_no_hand_written_module_is_over_500_lines():
    found = oversized(ROOT)
    assert not found, f"split these modules (at most {MAX_LINES} lines each):\n" + "\n".join(found)


def _copy_sources(tmp_path: Path) -> Path:
    for folder in PACKAGES:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.j2"))
    return tmp_path


def _plant(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_a_lazy_runtime_import_in_the_compiler_is_caught(tmp_path):
    root = _copy_sources(tmp_path)
    _plant(root / "compiler/diagnostics.py", "\n\ndef _sneak():\n    from ftc.runtime.runfolder import RUN_RECORD\n")
    _plant(root / "compiler/spec/__init__.py", "\nimport ftc.cli.main\n")
    _plant(root / "compiler/plan/__init__.py", "\nfrom ..build import lock\nfrom ...runtime import merge\n")
    found = layer_violations(root)
    assert "compiler/diagnostics.py imports ftc.runtime.runfolder" in found
    assert "compiler/spec/__init__.py imports ftc.cli.main" in found
    assert "compiler/plan/__init__.py imports ftc.runtime.merge" in found
    assert not any("ftc.compiler.build" in line for line in found)  # the compiler may import itself


def test_a_cli_import_in_the_runtime_or_ftc_in_a_template_is_caught(tmp_path):
    root = _copy_sources(tmp_path)
    _plant(root / "runtime/runfolder.py", "\nimport importlib\nimportlib.import_module('ftc.cli.common')\n")
    _plant(root / "templates/prepare.py", "\nfrom ftc.compiler import exitcodes\n")
    found = layer_violations(root)
    assert "runtime/runfolder.py imports ftc.cli.common" in found
    assert "templates/prepare.py imports ftc.compiler.exitcodes" in found


def test_an_oversized_module_is_caught(tmp_path):
    root = _copy_sources(tmp_path)
    (root / "cli/planted.py").write_text("x = 1\n" * (MAX_LINES + 1), encoding="utf-8")
    (root / "cli/just_fits.py").write_text("x = 1\n" * MAX_LINES, encoding="utf-8")
    found = oversized(root)
    assert f"cli/planted.py: {MAX_LINES + 1} lines" in found
    assert not any("just_fits" in line for line in found)


def test_every_compiler_module_imports_first():
    """Each compiler module imported first in a fresh interpreter: an import cycle between the spec, the method
    registry and the plan shows up only when one of them is the first to load."""
    import subprocess
    import sys

    names = [module_name(ROOT, p) for p in modules(ROOT, "compiler")]
    probe = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    failed = []
    for name in names:  # a fresh interpreter each
        result = subprocess.run([sys.executable, "-c", probe, name], capture_output=True, text=True, timeout=120)
        if result.returncode:
            failed.append(f"{name}: {result.stderr.strip().splitlines()[-1]}")
    assert not failed, "\n".join(failed)
