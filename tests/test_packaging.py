"""ftc installs from a wheel, not only from the source tree: the templates travel as package data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_wheel_carries_the_templates_and_runs(tmp_path):
    wheels = tmp_path / "wheels"
    source = tmp_path / "source"  # a clean copy: setuptools' build/lib in the tree could hold files the config no longer lists
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO, source, ignore=lambda folder, names: {*skip(folder, names), *(
        {".git", ".venv", "build", "runs"} & set(names) if Path(folder) == REPO else set()
    )})
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheels)],
        check=True,
        capture_output=True,
    )
    target = tmp_path / "site"
    (wheel,) = wheels.glob("ftc-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)
    for name in ("sft.py.j2", "preference.py.j2", "prepare.py", "load_model.py", "starter.toml"):
        assert (target / "ftc" / "templates" / name).is_file(), name
    for folder in ("cli", "compiler", "runtime", "templates"):  # every package of the tree is in the wheel
        for init in (REPO / folder).rglob("__init__.py"):
            module = init.parent.relative_to(REPO)
            assert (target / "ftc" / module / "__init__.py").is_file(), f"{module} is not in the wheel (pyproject.toml packages)"
    env = dict(os.environ, PYTHONPATH=str(target))
    probe = "import ftc.compiler.build.render as r, ftc.runtime.run.execute; print(r.templates_dir())"
    where = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(target)), where
    result = subprocess.run([sys.executable, "-m", "ftc.cli", "validate", "specs/quickstart.toml"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
