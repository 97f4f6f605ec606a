"""ftc installs from a wheel, not only from the source tree: the templates travel as package data."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_wheel_carries_the_templates_and_runs(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(wheels)],
        check=True,
        capture_output=True,
    )
    target = tmp_path / "site"
    (wheel,) = wheels.glob("ftc-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)
    for name in ("sft.py.j2", "dpo.py.j2", "prepare.py", "starter.toml"):
        assert (target / "ftc" / "templates" / name).is_file(), name
    env = dict(os.environ, PYTHONPATH=str(target))
    probe = "import ftc.compiler.build.render as r, ftc.runtime.run.execute; print(r.templates_dir())"
    where = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(target)), where
    result = subprocess.run([sys.executable, "-m", "ftc.cli", "validate", "specs/quickstart.toml"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
