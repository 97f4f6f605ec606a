"""Ctrl-C at a step the test chooses, however loaded the machine.

A tiny run trains faster than a busy machine schedules the test: between seeing step 5 and pressing Ctrl-C the script
may finish all 30 steps, and the test then sees a completed run. So the training processes are frozen (SIGSTOP) first,
ftc gets Ctrl-C, and they go on (SIGCONT) only once ftc has passed the signal on and it waits, pending, in each of
them: the next step boundary they reach is the one where they stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

SIGINT_BIT = 1 << (signal.SIGINT - 1)  # in /proc/PID/status's pending-signal masks


def sigint_pending(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone: nothing left to wait for
    masks = dict(line.split(":", 1) for line in status.splitlines() if line.startswith(("SigPnd", "ShdPnd")))
    return any(int(mask, 16) & SIGINT_BIT for mask in masks.values())


def all_threads_stopped(pid: int) -> bool:
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # a thread that ended
        if state not in "tTZX":
            return False
    return True


def describe(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        status = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(("State", "Sig", "Shd"))]
    except OSError:
        return f"{pid}: gone"
    return f"{pid} ({argv[:200]}): {', '.join(status)}"


def ctrl_c_while_frozen(ftc_process: subprocess.Popen, training: list[int], timeout: float = 120) -> None:
    """Freeze the `training` processes (the script, or torchrun's workers), press Ctrl-C at ftc, wait until each of
    them holds the SIGINT ftc passes on, then let them go on. Fails if one had already ended."""
    assert training, "no training process to stop"
    frozen = []
    try:
        for pid in training:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                raise AssertionError(f"process {pid} ended before the test could press Ctrl-C") from None
            frozen.append(pid)
        deadline = time.monotonic() + timeout
        # Every thread stopped first: a thread still running could take the SIGINT on its way to stopping, and the
        # test would then wait for a pending signal that was already delivered.
        while running := [pid for pid in training if not all_threads_stopped(pid)]:
            assert time.monotonic() < deadline, f"{running} did not stop within {timeout} s"
            time.sleep(0.01)
        ftc_process.send_signal(signal.SIGINT)
        while waiting := [pid for pid in training if not sigint_pending(pid)]:
            assert ftc_process.poll() is None, "ftc ended before passing Ctrl-C on"
            assert time.monotonic() < deadline, f"ftc did not pass Ctrl-C on to {waiting} within {timeout} s: " + "; ".join(
                describe(pid) for pid in waiting
            )
            time.sleep(0.02)
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
