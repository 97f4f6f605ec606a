"""`ftc run`: execute exactly the plan on disk.

Before anything runs, the build is compiled again in memory and compared with the one on disk: a stale
lock or a hand-edited script is refused, naming what changed and what to run. The generated script then
runs as a child process and writes into runs/<name>/<run-id>/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ftc.compiler.build import SCRIPT_NAME, Build, stale_inputs
from ftc.compiler.lock import LOCK_NAME, read_lock


class RunRefused(Exception):
    """The build cannot run as it is; the message says why and what to do."""


@dataclass(frozen=True)
class Target:
    spec: Path
    root: Path


def locate(target: Path) -> Target:
    """A spec file, or a build folder whose lock names its spec."""
    if target.is_dir():
        lock_path = target / LOCK_NAME
        if not lock_path.is_file():
            raise RunRefused(f"{target} has no {LOCK_NAME}; give a spec, or compile one into this folder first")
        root = target.resolve().parents[1]  # build/<name>/ lies under the project root
        return Target(root / read_lock(lock_path)["inputs"]["spec"]["path"], root)
    return Target(target, Path.cwd())


def check_current(build: Build) -> None:
    reasons = stale_inputs(build)
    if reasons:
        spec = build.lock["inputs"]["spec"]["path"]
        listing = "\n".join(f"  - {r}" for r in reasons)
        raise RunRefused(f"the build in {os.path.relpath(build.directory)} does not match its inputs:\n{listing}\nrun `ftc compile {spec}` first")


def new_run_dir(build: Build) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = build.directory.parents[1] / "runs" / build.name
    run_dir = base / stamp
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = base / f"{stamp}-{n}"
    return run_dir


def command_for(build: Build, run_dir: Path) -> list[str]:
    """One process runs the script; several go through the build's launch.sh (accelerate launch)."""
    hardware = build.lock["hardware"]
    if hardware["nodes"] > 1:
        raise RunRefused(
            f"the plan spans {hardware['nodes']} nodes: start build/{build.name}/launch.sh on each node "
            f"(it says how), or submit build/{build.name}/slurm.sbatch"
        )
    if hardware["devices"] > 1:
        return ["bash", str(build.directory / "launch.sh"), "--output-dir", str(run_dir)]
    return [sys.executable, str(build.directory / SCRIPT_NAME), "--output-dir", str(run_dir)]


def execute(build: Build, run_dir: Path, resume: bool = False) -> int:
    """Run the build as a child process; Ctrl-C is passed on so the trainer can stop cleanly."""
    command = command_for(build, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        command.append("--resume")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen(command, env=env)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        return child.wait()
