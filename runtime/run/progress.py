"""What `ftc run` shows while the script trains: a live bar (step, loss, tokens/s, ETA) on a terminal, and
one line per logging step everywhere, so that logs piped to a file or CI read well too."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def rl_stats(event: dict[str, Any]) -> dict[str, float]:
    """What GRPO and RLOO log beside the loss: the total reward, each reward's mean (trl's rewards/<name>/mean, kept
    as <name>), the KL to the starting policy, and the completions' mean length in tokens."""
    stats = {k: event[k] for k in ("reward", "kl") if isinstance(event.get(k), (int, float))}
    stats |= {k[len("rewards/") : -len("/mean")]: v for k, v in event.items() if k.startswith("rewards/") and k.endswith("/mean")}
    if "reward" in stats and isinstance(event.get("completions/mean_length"), (int, float)):
        stats["completion_length"] = event["completions/mean_length"]
    return stats if "reward" in stats else {}


def _rl_line(stats: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {v:.2f}" for k, v in stats.items() if k not in ("reward", "kl", "completion_length"))
    kl = f"  kl {stats['kl']:.4f}" if "kl" in stats else ""
    length = f"  length {stats['completion_length']:.0f}" if "completion_length" in stats else ""
    return f"  reward {stats['reward']:.3f} ({parts}){kl}{length}"


def _number(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


class RunDisplay:
    def __init__(self, console: Console, max_steps: int, echo_output: bool = True) -> None:
        self.console = console
        self.max_steps = max_steps
        self.echo_output = echo_output
        self.progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps  loss {task.fields[loss]}  {task.fields[speed]} tok/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.task = None
        self.began: tuple[float, int] | None = None  # (time, step) when this session's training began

    def __enter__(self) -> RunDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def line(self, text: str) -> None:
        """A line the script printed (also kept in train.log)."""
        if self.echo_output:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def event(self, event: dict[str, Any], session) -> None:
        kind = event.get("event")
        if kind == "start":
            where = event.get("device_name") or event.get("device")
            threads = f", {event['threads']} threads" if event.get("device") == "cpu" else ""
            resumed = f", resuming from {event['resume_from']}" if event.get("resume_from") else ""
            self.console.print(f"device: {where}{threads}, {event.get('precision')}{resumed}", markup=False)
        elif kind == "train_begin":
            self.max_steps = event.get("max_steps") or self.max_steps
            self.task = self.progress.add_task("train", total=self.max_steps, completed=event.get("step", 0), loss="-", speed="-")
            self.began = (time.monotonic(), event.get("step", 0))
        elif kind == "step" and self.task is not None:
            self.progress.update(self.task, completed=event["step"])
        elif kind == "log":
            self._log(event, session)
        elif kind == "checkpoint":
            self.console.print(f"step {event['step']}: checkpoint sealed: checkpoints/{event['path']}", markup=False)

    def _log(self, event: dict[str, Any], session) -> None:
        step = f"step {event.get('step')}/{self.max_steps}"
        if "eval_loss" in event:
            self.console.print(f"{step}  eval_loss {_number(event['eval_loss'], '.4f')}", markup=False)
        elif "loss" in event:
            speed = _number(session.tokens_per_second, ",.0f")
            stats = rl_stats(event)
            rewards = _rl_line(stats) if stats else ""
            self.console.print(f"{step}  loss {_number(event['loss'], '.4f')}{rewards}  lr {_number(event.get('learning_rate'), '.2e')}  {speed} tok/s  ETA {self._eta(event.get('step'))}", markup=False)
            if self.task is not None:
                self.progress.update(self.task, loss=_number(event["loss"], ".4f"), speed=speed)

    def _eta(self, step: Any) -> str:
        if self.began is None or not isinstance(step, int) or step <= self.began[1]:
            return "-"
        seconds = (time.monotonic() - self.began[0]) / (step - self.began[1]) * max(self.max_steps - step, 0)
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
