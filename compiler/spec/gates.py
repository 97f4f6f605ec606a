"""Evaluation gates: `tuned.exact_match >= base.exact_match + 0.2`, parsed, never evaluated as code."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_GATE = re.compile(
    r"^\s*(?P<side>tuned|base|zero_shot|few_shot)\.(?P<metric>[A-Za-z_][\w:./-]*)\s*(?P<op>>=|<=|>|<|==)\s*"
    r"(?:(?P<rside>tuned|base|zero_shot|few_shot)\.(?P<rmetric>[A-Za-z_][\w:./-]*)\s*(?:(?P<sign>[+-])\s*(?P<delta>\d+(?:\.\d+)?))?"
    r"|(?P<const>-?\d+(?:\.\d+)?))\s*$"
)
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
# The values each answer metric can take (runtime/evaluate/metrics.py defines them): shares and F-measures lie in
# [0, 1], mean_length counts tokens. A gate outside these bounds either always holds or never can.
RANGES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("exact_match", "accuracy", "rouge_l", "bleu", "chrf", "json_valid", "json_schema"), (0.0, 1.0)),
    **dict.fromkeys(("distinct_n", "distinct_1", "repetition"), (0.0, 1.0)),
    "mean_length": (0.0, math.inf),
}
COMPANIONS = {"distinct_n": ("distinct_1", "repetition")}  # measured along with the metric, so gates may read them
GRAMMAR = (
    "write `tuned.<metric> <op> <number>` or `tuned.<metric> <op> base.<metric> [+|- <number>]`, op one of "
    ">= <= > < ==; the sides are tuned, base, zero_shot (the base as prompted: the same numbers) and few_shot"
)
UNTRAINED = ("base", "zero_shot", "few_shot")  # sides that training does not change


@dataclass(frozen=True)
class Gate:
    side: str
    metric: str
    op: str
    ref_side: str | None
    ref_metric: str | None
    offset: float  # added to the reference (or the constant itself when ref_side is None)

    def metrics(self) -> set[str]:
        return {self.metric} | ({self.ref_metric} if self.ref_metric else set())

    def holds(self, scores: dict[str, dict[str, float]]) -> bool:
        left = scores[self.side][self.metric]
        right = self.offset + (scores[self.ref_side][self.ref_metric] if self.ref_side and self.ref_metric else 0.0)
        return OPS[self.op](left, right)


def parse_gate(text: str) -> Gate:
    m = _GATE.match(text)
    if not m:
        raise ValueError(f"cannot read gate {text!r}")
    if m["const"] is not None:
        return Gate(m["side"], m["metric"], m["op"], None, None, float(m["const"]))
    delta = float(m["delta"] or 0.0) * (-1 if m["sign"] == "-" else 1)
    return Gate(m["side"], m["metric"], m["op"], m["rside"], m["rmetric"], delta)


def verdict(gate: Gate) -> str | None:
    """"always" when the gate holds whatever the metrics' values, "never" when no values can make it hold, None
    when it can go either way (or a metric's range is unknown, e.g. an lm-eval task's)."""
    if gate.ref_side is None:
        if gate.metric not in RANGES:
            return None
        low, high = RANGES[gate.metric]
    elif gate.side == gate.ref_side and gate.metric == gate.ref_metric:
        low = high = 0.0  # the left side minus the reference: a metric against itself
    elif gate.metric in RANGES and gate.ref_metric in RANGES:
        left, right = RANGES[gate.metric], RANGES[gate.ref_metric]
        low, high = left[0] - right[1], left[1] - right[0]
    else:
        return None
    # The gate holds for a value x in [low, high] when x <op> offset.
    holds_at_low, holds_at_high = OPS[gate.op](low, gate.offset), OPS[gate.op](high, gate.offset)
    if gate.op == "==":
        if low == high == gate.offset:
            return "always"
        return "never" if not low <= gate.offset <= high else None
    if holds_at_low and holds_at_high:
        return "always"  # the ops other than == are monotonic: holding at both ends, they hold between
    if not holds_at_low and not holds_at_high:
        return "never"
    return None


def gate_problem(gate: Gate) -> tuple[str, str, str] | None:
    """(severity, message, hint) for a gate that cannot go either way, or that training cannot move."""
    if gate.side in UNTRAINED and gate.ref_side in (None, *UNTRAINED):
        return "warning", "gate reads only the base model, which training does not change", f"gate on tuned.{gate.metric}"
    found = verdict(gate)
    if found is None:
        return None
    if gate.ref_side is not None and gate.side == gate.ref_side and gate.metric == gate.ref_metric:
        why = f"it compares {gate.side}.{gate.metric} with itself"
    else:
        why = "; ".join(_range_of(m) for m in sorted(gate.metrics()))
    if found == "always":
        return "warning", f"gate always passes: {why}", "a gate that cannot fail checks nothing; give a bound inside the range"
    return "error", f"gate can never pass: {why}", "give a bound inside the range, or `ftc eval` fails on every run"


def _range_of(metric: str) -> str:
    low, high = RANGES[metric]
    return f"{metric} lies between {low:g} and {high:g}" if high != math.inf else f"{metric} is at least {low:g}"


def check_baselines(loaded) -> Iterator:
    """Diagnostics on [evaluation] baselines: listed twice, asked of a reward model, or read by a gate that the
    spec does not evaluate (zero_shot is the base's numbers, so compare_base also gives it)."""
    from ftc.compiler.methods import METHODS

    ev = loaded.spec.evaluation
    if len(set(ev.baselines)) != len(ev.baselines):
        yield loaded.diag("evaluation.baselines", "a baseline is listed twice", "list each baseline once")
    if ev.baselines and not METHODS[loaded.spec.method.kind].plan.generates:
        yield loaded.diag(
            "evaluation.baselines", "a reward model answers nothing, so there is no prompting to compare it with",
            "remove baselines", severity="warning",
        )
    for i, text in enumerate(ev.gates):
        try:
            gate = parse_gate(text)
        except ValueError:
            continue  # reported with the other gate checks
        for side in sorted({gate.side, gate.ref_side} & {"zero_shot", "few_shot"}):
            if side not in ev.baselines and not (side == "zero_shot" and ev.compare_base):
                yield loaded.diag(
                    f"evaluation.gates.{i}", f"gate reads the {side} baseline, which is not evaluated",
                    f'add "{side}" to evaluation.baselines',
                )
