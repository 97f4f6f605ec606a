"""Evaluation gates: `tuned.exact_match >= base.exact_match + 0.2`, parsed, never evaluated as code."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

_GATE = re.compile(
    r"^\s*(?P<side>tuned|base)\.(?P<metric>[A-Za-z_][\w:./-]*)\s*(?P<op>>=|<=|>|<|==)\s*"
    r"(?:(?P<rside>tuned|base)\.(?P<rmetric>[A-Za-z_][\w:./-]*)\s*(?:(?P<sign>[+-])\s*(?P<delta>\d+(?:\.\d+)?))?"
    r"|(?P<const>-?\d+(?:\.\d+)?))\s*$"
)
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
GRAMMAR = "write `tuned.<metric> <op> <number>` or `tuned.<metric> <op> base.<metric> [+|- <number>]`, op one of >= <= > < =="


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
