"""`ftc compile --check` turns staleness into an error that names what changed; `ftc run` refuses the same."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GOLDEN_PACKAGES, REPO

from ftc.compiler.build.compile import compile_build, write_build
from ftc.compiler.build.stale import stale_inputs


@pytest.fixture()
def project(tmp_path, monkeypatch):
    shutil.copytree(REPO / "specs" / "data" / "ticket_triage", tmp_path / "specs" / "data" / "ticket_triage")
    shutil.copy(REPO / "specs" / "quickstart.toml", tmp_path / "specs" / "quickstart.toml")
    monkeypatch.chdir(tmp_path)
    build = compile_build(Path("specs/quickstart.toml"), root=tmp_path, packages=GOLDEN_PACKAGES)
    write_build(build)
    return tmp_path


def _fresh(root, packages=GOLDEN_PACKAGES):
    return compile_build(Path("specs/quickstart.toml"), root=root, packages=packages)


def test_current_build_is_not_stale(project):
    assert stale_inputs(_fresh(project)) == []


def test_changed_data_is_named(project):
    path = project / "specs/data/ticket_triage/val.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-1]), encoding="utf-8")
    reasons = stale_inputs(_fresh(project))
    assert any(r.startswith("data changed") and "val.jsonl" in r for r in reasons), reasons


def test_changed_spec_is_named(project):
    spec = project / "specs/quickstart.toml"
    spec.write_text(spec.read_text(encoding="utf-8").replace("r = 16", "r = 8"), encoding="utf-8")
    assert any(r.startswith("spec changed") for r in stale_inputs(_fresh(project)))


def test_changed_package_is_named(project):
    reasons = stale_inputs(_fresh(project, {**GOLDEN_PACKAGES, "trl": "1.16.1"}))
    assert any(r.startswith("package changed") and "trl" in r for r in reasons), reasons


def test_edited_script_is_named(project):
    script = project / "build/quickstart/train.py"
    script.write_text(script.read_text(encoding="utf-8") + "\n# tweak\n", encoding="utf-8")
    assert any("edited by hand" in r for r in stale_inputs(_fresh(project)))


def test_cli_check_exit_codes(project):
    cmd = [sys.executable, "-m", "ftc.cli", "compile", "--check", "specs/quickstart.toml"]
    first = subprocess.run(cmd, capture_output=True, text=True)
    # the build above was written with the golden package pins; the installed ones may differ
    subprocess.run([sys.executable, "-m", "ftc.cli", "compile", "specs/quickstart.toml"], check=True, capture_output=True)
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0, first.stderr
    train = project / "specs/data/ticket_triage/train.jsonl"
    train.write_text("".join(train.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    stale = subprocess.run(cmd, capture_output=True, text=True)
    assert stale.returncode == 1
    assert "data changed" in stale.stderr and "train.jsonl" in stale.stderr


def test_run_refuses_an_edited_script(project):
    subprocess.run([sys.executable, "-m", "ftc.cli", "compile", "specs/quickstart.toml"], check=True, capture_output=True)
    script = project / "build/quickstart/train.py"
    text = script.read_text(encoding="utf-8")
    assert "\nMAX_STEPS = " in text
    script.write_text(text.replace("\nMAX_STEPS = ", "\nMAX_STEPS = 1000  # was "), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "ftc.cli", "run", "specs/quickstart.toml"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "edited by hand" in result.stderr and "ftc compile specs/quickstart.toml" in result.stderr


def test_run_of_a_build_folder_works_from_any_folder(project, tmp_path_factory):
    subprocess.run([sys.executable, "-m", "ftc.cli", "compile", "specs/quickstart.toml"], check=True, capture_output=True)
    script = project / "build/quickstart/train.py"
    script.write_text(script.read_text(encoding="utf-8") + "# tweak\n", encoding="utf-8")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = subprocess.run(
        [sys.executable, "-m", "ftc.cli", "run", str(project / "build/quickstart")], cwd=elsewhere, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "edited by hand" in result.stderr
    assert "changed" not in result.stderr, result.stderr  # the spec and data were found where the lock says
