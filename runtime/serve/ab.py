"""A/B serving: `--ab CHAMPION=0.9,CHALLENGER=0.1` parsed into arms, and the router that picks an arm per request.

Each side is what `ftc serve TARGET` accepts (a run folder, a spec, a model folder). The weights must be positive
and sum to 1. A request with OpenAI's `user` field always goes to the same arm (sha256 of the user, read as a
number in [0, 1), falls into one arm's share); one without it goes to a seeded random choice.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass

WEIGHT_TOLERANCE = 1e-6  # how far from 1 the weights' sum may be (0.9 + 0.1 in floating point)
DEFAULT_SEED = 0


class ArmsRefused(ValueError):
    """--ab does not describe two or more arms with positive weights that sum to 1."""


@dataclass(frozen=True)
class ArmSpec:
    label: str  # the target text as the user wrote it
    weight: float


def parse_ab(text: str) -> list[ArmSpec]:
    """`A=0.9,B=0.1` -> arms; ArmsRefused saying what is wrong."""
    arms = []
    for part in text.split(","):
        label, sep, weight = part.strip().rpartition("=")
        if not sep or not label.strip():
            raise ArmsRefused(f"--ab: {part.strip()!r} is not TARGET=WEIGHT (e.g. --ab runs/a/1=0.9,runs/a/2=0.1)")
        try:
            value = float(weight)
        except ValueError:
            raise ArmsRefused(f"--ab: the weight of {label.strip()} is {weight!r}, not a number") from None
        if not (value > 0 and math.isfinite(value)):
            raise ArmsRefused(f"--ab: the weight of {label.strip()} is {weight}; every weight must be above 0")
        arms.append(ArmSpec(label.strip(), value))
    if len(arms) < 2:
        raise ArmsRefused("--ab needs two arms or more (CHAMPION=0.9,CHALLENGER=0.1); to serve one model, give it as TARGET")
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise ArmsRefused(f"--ab names {next(x for x in labels if labels.count(x) > 1)} twice")
    total = sum(a.weight for a in arms)
    if abs(total - 1) > WEIGHT_TOLERANCE:
        raise ArmsRefused(f"--ab: the weights sum to {total:g}; they must sum to 1")
    return arms


class Router:
    """Picks an arm's index by the weights: by the hash of `user` when given (sticky), else at random (seeded)."""

    def __init__(self, weights: Sequence[float], seed: int = DEFAULT_SEED) -> None:
        total = sum(weights)
        self.bounds, running = [], 0.0
        for w in weights:
            running += w / total
            self.bounds.append(running)
        self.random = random.Random(seed)
        self.lock = threading.Lock()

    def _index(self, x: float) -> int:
        for k, bound in enumerate(self.bounds):
            if x < bound:
                return k
        return len(self.bounds) - 1

    def pick(self, user: str | None) -> int:
        if isinstance(user, str) and user:
            digest = hashlib.sha256(user.encode("utf-8")).digest()
            return self._index(int.from_bytes(digest[:8], "big") / 2**64)
        with self.lock:
            return self._index(self.random.random())
