"""The report's section for GRPO and RLOO runs: the rewards by step, from the "log" events of events.jsonl (the
weighted total, each declared reward's mean, the KL to the starting policy and the completions' mean length)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from ftc.runtime.report import plots
from ftc.runtime.run.progress import rl_stats

Points = dict[str, tuple[tuple[int, float], ...]]


def reward_points(events: Iterable[dict[str, Any]]) -> Points:
    """Each logged statistic as (step, value) points, in the order first logged."""
    found: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        if event.get("event") == "log" and isinstance(event.get("step"), int):
            for name, value in rl_stats(event).items():
                found.setdefault(name, []).append((event["step"], value))
    return {name: tuple(points) for name, points in found.items()}


def reward_section(points: Points, logging_steps: int, max_steps: int | None, image: Callable[[bytes, str], str], table: Callable[..., str]) -> str:
    if not points:
        return ""
    curves = {name: series for name, series in points.items() if name not in ("kl", "completion_length")}
    parts = ['<section id="rewards"><h2>Rewards</h2>', f"<figure>{image(plots.reward_curves(curves, max_steps), 'rewards by step')}"]
    parts.append(f"<figcaption>mean reward of the completions sampled at each step, logged every {logging_steps} steps, from events.jsonl</figcaption></figure>")
    names = list(points)
    steps = sorted({step for series in points.values() for step, _ in series})
    values = {name: dict(series) for name, series in points.items()}
    rows = [[str(step), *(escape(f"{values[n][step]:.4f}") if step in values[n] else "" for n in names)] for step in steps]
    parts.append(f"<details><summary>the logged values ({len(rows)} steps)</summary>{table(['step', *map(escape, names)], rows, set(range(len(names) + 1)))}</details>")
    return "".join(parts) + "</section>"
