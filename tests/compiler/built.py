"""The quickstart, compiled once per test session (about 15 s) for the tests of plan, diff and eject.

Import it explicitly: `from built import quickstart`. The packages are pinned to the golden versions,
so that what the tests see does not change with the installed ones.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from conftest import GOLDEN_PACKAGES, REPO

from ftc.compiler.build.compile import Build, compile_build


@lru_cache(maxsize=1)
def quickstart() -> Build:
    return compile_build(REPO / "specs" / "quickstart.toml", root=REPO, packages=GOLDEN_PACKAGES)


def quickstart_lock() -> dict[str, Any]:
    """A fresh copy of the quickstart's lock as the JSON it writes, for a test to change as it likes."""
    return quickstart().lock.to_json()


def write_quickstart(root: Path) -> Path:
    """Write the quickstart build under root/build/quickstart/, with root/specs pointing at the repository's
    specs (so that the lock's root-relative data paths resolve). Returns the build folder."""
    build = quickstart()
    folder = root / "build" / build.name
    folder.mkdir(parents=True)
    for name, text in build.files.items():
        (folder / name).write_text(text, encoding="utf-8", newline="\n")
    (root / "specs").symlink_to(REPO / "specs", target_is_directory=True)
    return folder
