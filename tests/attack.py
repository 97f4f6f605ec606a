"""What the hostile suite (tests/hostile/) asks of every outcome: ftc either succeeds (exit 0) or refuses
(exit 1 or 2) with a message, never with a Python traceback, and writes nothing outside build/<name>/.

`ftc_in_process` runs the command line in this process, so that hundreds of cases stay fast: an exception
that escapes `ftc.cli.main.main` is what a user would have seen as a traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

# `file:line:col: key: message` or `file:line: message`: a diagnostic that points into a file
LOCATED = re.compile(r"^\S+?:\d+(:\d+)?: ", re.MULTILINE)


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str
    traceback: str | None  # the exception that escaped, formatted; None when ftc returned or exited

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}\n{self.traceback or ''}"

    @property
    def located(self) -> bool:
        """At least one diagnostic names a file and a line."""
        return bool(LOCATED.search(self.stderr))


def ftc_in_process(*args: str, cwd: Path) -> Outcome:
    from ftc.cli.main import main

    stdout, stderr = io.StringIO(), io.StringIO()
    escaped = None
    before = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: 2 for usage, 0 after --help
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - exactly what the user would have seen
                code = -1
                escaped = traceback.format_exc()
    finally:
        os.chdir(before)
    return Outcome(code, stdout.getvalue(), stderr.getvalue(), escaped)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below `root` (following no links), with its size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return found


def writes_outside(before: dict, after: dict, allowed: str) -> list[str]:
    """Files created, changed or removed below the root, other than under `allowed` (e.g. "build/quickstart")."""
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    prefix = allowed.rstrip("/") + "/"
    return sorted(p for p in changed if not p.startswith(prefix) and "__pycache__" not in p)
