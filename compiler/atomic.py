"""Files written whole or not at all, for the build and the run folder alike.

A file is written into a new temporary file beside it (`.<name>.<pid>.<random>.tmp`, created exclusively, so never
one an attacker planted or a link), synced to disk, then renamed over the target: a reader sees the old file or
the new one, never half of one, and a link at the target is replaced, never written through. A writer killed
midway leaves its temporary file behind; the next writer of that file removes it once its process is gone.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    replace_atomic(path, lambda fh: fh.write(text.encode("utf-8")), mode)


def copy_atomic(source: Path, path: Path) -> None:
    with source.open("rb") as src:
        replace_atomic(path, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))


def replace_atomic(path: Path, fill: Callable[[BinaryIO], object], mode: int | None = None) -> None:
    """Write `path` whole with what `fill` writes into the open file, after removing what killed writers left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_leftover(name: str) -> bool:
    """A temporary file name of this module's (`.<name>.<pid>.<random>.tmp`)."""
    parts = name.split(".")
    return name.startswith(".") and name.endswith(TMP_SUFFIX) and len(parts) >= 5 and parts[-3].isdigit()


def remove_leftovers(path: Path) -> None:
    """Temporary files beside `path` that a writer of it, killed midway, left: those whose process is gone (a
    writer running beside this one keeps its own)."""
    if not path.parent.is_dir():
        return
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}"):
        pid = leftover.name[len(path.name) + 2 :].split(".")[0]
        if pid.isdigit() and not is_alive(int(pid)) and leftover.is_file() and not leftover.is_symlink():
            leftover.unlink(missing_ok=True)


def is_alive(pid: int) -> bool:
    """Whether process `pid` runs; a zombie (killed, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): the process exists


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
