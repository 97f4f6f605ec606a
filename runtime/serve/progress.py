"""Progress on ftc serve's terminal (Reporter), and a function run beside the main thread (Background)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any


class Background(threading.Thread):
    """Runs a function beside the main thread; join() returns its result or raises its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn, self.result, self.error, self.done = fn, None, None, False

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
        self.done = True

    def value(self) -> Any:
        if not self.done:
            self.join()
        if self.error is not None:
            raise self.error
        return self.result


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Reporter:
    """Progress on stderr: a live status line on a terminal, a line now and then otherwise."""

    def __init__(self, err) -> None:
        self.err = err
        self.status = None
        self.last_line = 0.0

    def __enter__(self) -> Reporter:
        if self.err.is_terminal:
            self.status = self.err.status("ftc serve", spinner="dots")
            self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)
            self.status = None

    def step(self, text: str) -> None:
        if self.status is not None:
            self.status.update(text)
        else:
            self.err.print(f"  {text}", markup=False)

    def tick(self, text: str, every: float = 15) -> None:
        """A frequent update: every time on a terminal, every `every` seconds otherwise."""
        if self.status is not None:
            self.status.update(text)
        elif time.monotonic() - self.last_line >= every:
            self.last_line = time.monotonic()
            self.err.print(f"  {text}", markup=False)

    def say(self, text: str, style: str | None = None) -> None:
        self.err.print(text, markup=False, style=style)
