"""`ftc report --ab LOGS`: one self-contained HTML page comparing the arms of an A/B deployment, from the exchanges
`ftc serve --log` wrote (each carries the `arm` that answered) and, optionally, the feedback on them.

Per arm: requests, failed requests, the share of rated answers that were rated good, bad, and corrected, each with
a 95% Wilson interval; latency p50 and p99 (nearest rank); prompt and completion tokens. The arm with the higher
share rated good is ahead; a two-proportion z-test (pooled, two-sided) of its share against the runner-up's says
whether the difference is significant at ALPHA. The page is a pure function of the logs and the feedback: the same
files give the same bytes. Every value from the logs is HTML-escaped; there is no script and nothing is fetched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ftc.runtime.exchanges import Exchange, log_files, read_exchanges
from ftc.runtime.feedback import Feedback, read_feedback
from ftc.runtime.report.page import CSS, e

Z95 = 1.959963984540054  # the normal quantile of a 95% two-sided interval
ALPHA = 0.05
AB_PAGE = "ab-report.html"  # written into the log folder unless --output says otherwise


class ABError(Exception):
    """The logs cannot be compared: the message says why."""


@dataclass
class Arm:
    name: str
    requests: int = 0
    failed: int = 0
    rated: int = 0
    good: int = 0
    bad: int = 0
    corrected: int = 0
    latencies: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, ex: Exchange, verdict: Feedback | None) -> None:
        self.requests += 1
        self.failed += ex.status >= 400
        self.latencies.append(ex.latency_ms)
        self.prompt_tokens += ex.prompt_tokens or 0
        self.completion_tokens += ex.completion_tokens or 0
        if verdict is not None:
            self.rated += 1
            self.good += verdict.verdict == "good"
            self.bad += verdict.verdict == "bad"
            self.corrected += verdict.correction is not None


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of k successes in n; None without trials."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float] | None:
    """(z, two-sided p) of a pooled two-proportion z-test; None when it cannot be computed."""
    if not n1 or not n2:
        return None
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k1 / n1 - k2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Comparison:
    arms: list[Arm]
    unarmed: int  # exchanges without an arm, left out
    files: list[str]
    feedback: str | None
    verdict: str
    test: tuple[float, float] | None = None


def compare(logs: Path, feedback_path: Path | None) -> Comparison:
    """Read the logs and the feedback and compare the arms; raises ABError, ExchangeError or FeedbackError."""
    exchanges = [ex for _, _, ex in read_exchanges(logs)]
    feedback = read_feedback(feedback_path, {ex.id for ex in exchanges}) if feedback_path else {}
    arms: dict[str, Arm] = {}
    unarmed = 0
    for ex in exchanges:
        if ex.arm is None:
            unarmed += 1
            continue
        arms.setdefault(ex.arm, Arm(ex.arm)).add(ex, feedback.get(ex.id, (0, None))[1])
    if not arms:
        raise ABError(
            f"{logs}: no exchange has an arm: these logs come from one served model. The A/B page compares the arms "
            "of `ftc serve` serving two models (each exchange records the arm that answered)"
        )
    ordered = sorted(arms.values(), key=lambda a: a.name)
    files = [str(f) for f in (log_files(logs) if logs.is_dir() else [logs])]
    result = Comparison(ordered, unarmed, files, str(feedback_path) if feedback_path else None, "")
    result.verdict, result.test = _verdict(ordered)
    return result


def _verdict(arms: list[Arm]) -> tuple[str, tuple[float, float] | None]:
    if len(arms) < 2:
        return f"only one arm ({arms[0].name}) answered: nothing to compare", None
    rated = [a for a in arms if a.rated]
    if len(rated) < 2:
        return "fewer than two arms have rated answers: give --feedback with verdicts on both arms", None
    first, second = sorted(rated, key=lambda a: (-a.good / a.rated, a.name))[:2]
    test = two_proportion(first.good, first.rated, second.good, second.rated)
    assert test is not None
    z, p = test
    shares = f"{first.good / first.rated:.1%} of {first.rated} rated good against {second.good / second.rated:.1%} of {second.rated}"
    if first.good / first.rated == second.good / second.rated:
        return f"no arm is ahead: {first.name} and {second.name} have the same share rated good ({shares})", test
    if p < ALPHA:
        return f"{first.name} is ahead of {second.name}: {shares}; significant (two-proportion z = {z:.2f}, p = {p:.3g} < {ALPHA})", test
    unsure = (
        f"{first.name} is ahead of {second.name} ({shares}), but the difference is not significant (two-proportion z = "
        f"{z:.2f}, p = {p:.3g} >= {ALPHA}): collect more feedback before choosing"
    )
    return unsure, test


def _share(k: int, n: int) -> str:
    interval = wilson(k, n)
    if interval is None:
        return "–"
    return f"{k / n:.1%} <span class=\"muted\">({interval[0]:.1%}–{interval[1]:.1%})</span>"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def render_ab(c: Comparison) -> str:
    head = ["arm", "requests", "failed", "rated", "good (95% CI)", "bad (95% CI)", "corrected (95% CI)",
            "latency p50", "latency p99", "prompt tokens", "completion tokens", "completion tokens / request"]
    rows = []
    for a in c.arms:
        cells = [
            e(a.name), f"{a.requests:,}", f"{a.failed:,}", f"{a.rated:,}", _share(a.good, a.rated), _share(a.bad, a.rated),
            _share(a.corrected, a.rated), _ms(percentile(a.latencies, 50)), _ms(percentile(a.latencies, 99)),
            f"{a.prompt_tokens:,}", f"{a.completion_tokens:,}", f"{a.completion_tokens / a.requests:,.1f}" if a.requests else "–",
        ]
        rows.append("<tr>" + "".join(f'<td class="num">{x}</td>' if i else f"<td>{x}</td>" for i, x in enumerate(cells)) + "</tr>")
    table = "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    notes = []
    if c.unarmed:
        notes.append(f"{c.unarmed:,} exchange(s) without an arm are left out")
    if c.feedback is None:
        notes.append("no feedback file: no answer is rated, so no arm can be ahead on quality")
    note_html = "".join(f'<p class="note">{e(n)}</p>' for n in notes)
    files = ", ".join(c.files)
    body = (
        f"<h1>A/B comparison of {len(c.arms)} arm(s)</h1>\n<p class=\"sub\">{e(files)}"
        + (f"; feedback {e(c.feedback)}" if c.feedback else "") + "</p>\n"
        f"<h2>verdict</h2>\n<p><strong>{e(c.verdict)}</strong></p>\n{note_html}\n<h2>arms</h2>\n{table}\n"
        "<p class=\"muted\">shares are of the rated answers; intervals are 95% Wilson score intervals; latency is "
        "nearest-rank percentiles of the time to the full answer; tokens are what the server counted</p>"
    )
    from ftc.compiler import __version__

    footer = f"<footer>made by <code>ftc report --ab</code> (ftc {e(__version__)})</footer>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>ftc A/B report</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n{footer}\n</body>\n</html>\n"
    )


def write_ab(logs: Path, feedback: Path | None, output: Path | None) -> tuple[Path, Comparison]:
    from ftc.compiler.atomic import write_atomic

    c = compare(logs, feedback)
    path = output or (logs if logs.is_dir() else logs.parent) / AB_PAGE
    write_atomic(path, render_ab(c))
    return path, c
