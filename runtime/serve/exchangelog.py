"""Where `ftc serve` writes its exchange log, and how it redacts it: `--log DIR`, else the lock's serve.log
(relative to the run's project root); nothing is logged without one of them. The folder is created 0700 and
every file 0600 (ExchangeLog); redaction is the lock's serve.log_redact and serve.log_patterns (for a model
folder without a plan: emails and keys)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ftc.runtime.exchanges import ExchangeLog
from ftc.runtime.serve.redact import DEFAULT_REDACT, Redactor
from ftc.runtime.serve.settings import ServeRefused

if TYPE_CHECKING:
    from ftc.runtime.serve.target import Target

MIB = 1024 * 1024
DEFAULT_MAX_MB = 64


@dataclass(frozen=True)
class LogSetup:
    folder: Path
    max_bytes: int
    redactor: Redactor
    redact: tuple[str, ...]  # the built-in redactions, for the console
    patterns: int  # how many of the spec's own patterns


def log_setup(folder: Path | None, target: Target) -> LogSetup | None:
    """The exchange log `--log DIR` or the lock's serve.log asks for; None: no log."""
    serve = target.run.lock.serve if target.run else None
    if folder is None and serve is not None and serve.log:
        folder = target.run.root / serve.log
    if folder is None:
        return None
    redact = tuple(serve.log_redact) if serve else DEFAULT_REDACT
    patterns = tuple(serve.log_patterns) if serve else ()
    max_mb = serve.log_max_mb if serve else DEFAULT_MAX_MB
    return LogSetup(folder, max_mb * MIB, Redactor(redact, patterns), redact, len(patterns))


def open_log(setup: LogSetup) -> ExchangeLog:
    """The log folder, created with mode 0700 (an existing one is narrowed to it), ready to append to."""
    try:
        setup.folder.parent.mkdir(parents=True, exist_ok=True)
        if not setup.folder.exists():
            os.mkdir(setup.folder, 0o700)
        if not setup.folder.is_dir():
            raise ServeRefused(f"the exchange log {setup.folder} is not a folder; give --log DIR")
        os.chmod(setup.folder, 0o700)
        probe = setup.folder / ".ftc-write-check"
        probe.touch(mode=0o600)
        probe.unlink()
        return ExchangeLog(setup.folder, setup.max_bytes)
    except OSError as exc:
        raise ServeRefused(f"cannot write the exchange log in {setup.folder} ({exc.strerror}); give another --log DIR") from exc


def describe(setup: LogSetup) -> str:
    shown = ", ".join(setup.redact) or "no built-in patterns"
    extra = f" and {setup.patterns} pattern(s) of the spec" if setup.patterns else ""
    return f"exchanges are logged to {setup.folder}/ (redacted: {shown}{extra}; a new file every {setup.max_bytes // MIB} MiB)"
