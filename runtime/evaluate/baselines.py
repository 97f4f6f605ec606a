"""The prompting baselines `ftc eval` scores beside the tuned model, and the verdict on them.

zero_shot is the base model prompted as the tuned model is: eval.json's "base" column, decoded once. few_shot
is the base model with k training examples before each question (runtime/evaluate/fewshot.py). The headline
metric is evaluation.headline, by default the first of evaluation.metrics other than mean_length (a length is
neither good nor bad). When a baseline scores within the margin of the tuned model on it (baseline >= tuned -
margin; for repetition, where lower is better, baseline <= tuned + margin), fine-tuning is not paying for itself
on this task, and the diagnosis says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftc.compiler.spec.evaluation import BASELINES
from ftc.runtime.evaluate.diagnose import Finding

LOWER_IS_BETTER = ("repetition",)
COLUMN = {"zero_shot": "base", "few_shot": "few_shot"}  # where each baseline's numbers are in a metric row
FINDING = "not_paying_for_itself"


@dataclass(frozen=True)
class Baselines:
    """Which baselines to score, with how many examples, the verdict's margin, and where the choice came from."""

    names: tuple[str, ...]
    k: int
    margin: float
    given_by: str  # "spec" (the lock's evaluation) or "command line" (--baselines, --few-shot-k)

    @property
    def few_shot(self) -> bool:
        return "few_shot" in self.names

    @property
    def zero_shot(self) -> bool:
        return "zero_shot" in self.names


def parse_names(text: str) -> tuple[str, ...]:
    """--baselines: comma-separated names; ValueError with a did-you-mean for an unknown one."""
    import difflib

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in BASELINES:
            near = difflib.get_close_matches(name, BASELINES, n=1)
            hint = f'did you mean "{near[0]}"? ' if near else ""
            raise ValueError(f"unknown baseline {name!r}: {hint}(expected one of: {', '.join(BASELINES)})")
    if len(set(names)) != len(names):
        raise ValueError("a baseline is listed twice")
    return names


def resolve(ev, names: tuple[str, ...] | None, k: int | None) -> Baselines:
    """The lock's evaluation baselines, with the command line's overrides."""
    given = "command line" if names is not None or k is not None else "spec"
    return Baselines(
        tuple(ev.baselines) if names is None else names,
        ev.few_shot_k if k is None else k,
        ev.baseline_margin,
        given,
    )


def shown(name: str, k: int) -> str:
    return f"few-shot prompting (k={k})" if name == "few_shot" else "zero-shot prompting"


def verdict(
    headline: str | None, row: dict[str, Any] | None, names: tuple[str, ...], k: int, margin: float
) -> tuple[Finding | None, str | None]:
    """(the finding, why it could not be checked): a finding when a baseline scores within `margin` of the
    tuned model on the headline metric (the closest baseline is named), none when the tuned model is clearly
    better."""
    if headline is None:
        return None, "no headline metric: evaluation.metrics lists none but mean_length (set evaluation.headline)"
    tuned = (row or {}).get("tuned")
    if tuned is None:
        return None, f"the tuned model has no {headline} score"
    scored = {n: row.get(COLUMN[n]) for n in names if row.get(COLUMN[n]) is not None}
    if not scored:
        return None, f"no baseline has a {headline} score"
    lower = headline in LOWER_IS_BETTER
    close = {n: s for n, s in scored.items() if (s <= tuned + margin if lower else s >= tuned - margin)}
    ceiling = 0.0 if lower else 1.0
    if close and tuned == ceiling and all(s == ceiling for s in close.values()) and headline != "mean_length":
        # a saturated metric (every answer valid JSON, say) cannot tell the models apart: no verdict either way
        return None, (
            f"the tuned model and {', '.join(shown(n, k) for n in close)} all score {ceiling:g} on {headline}, which "
            "cannot tell them apart; set evaluation.headline to a metric that can (e.g. accuracy or rouge_l)"
        )
    if not close:
        return None, None
    best = max(close, key=lambda n: (-close[n] if lower else close[n], n == "zero_shot"))  # on a tie, the cheaper prompt
    others = "; ".join(f"{shown(n, k)} scores {s:.4f}" for n, s in close.items() if n != best)
    evidence = (
        f"fine-tuning is not paying for itself on this task: {shown(best, k)} scores {close[best]:.4f} against the "
        f"tuned model's {tuned:.4f} on {headline}, within the margin of {margin:g}" + (f" ({others})" if others else "")
    )
    remedy = (
        f"keep prompting the base model ({'with ' + str(k) + ' examples in the prompt' if best == 'few_shot' else 'as it is'}),"
        " which is cheaper to change and to serve; or make fine-tuning earn its place: add training data, train "
        f"longer, or try a larger rank, and gate it with "
        + (f"'tuned.{headline} <= {best}.{headline} - {margin:g}'" if lower else f"'tuned.{headline} >= {best}.{headline} + {margin:g}'")
    )
    return Finding(FINDING, evidence, remedy), None


def model_of(few_shot) -> dict[str, str]:
    """eval.json's models entry for the few-shot side, when it was asked."""
    if few_shot is None:
        return {}
    return {"few_shot": f"the base weights, with {len(few_shot.choice.examples)} training example(s) before each question"}


def record(asked: Baselines, headline: str | None, rows: dict[str, dict[str, Any]], few_shot, side, diagnosis) -> tuple[dict[str, Any] | None, list[str]]:
    """eval.json's "baselines" (None when none was asked for) and the notes a reader must see; the verdict goes
    into `diagnosis` (a finding, or why it was not checked)."""
    if not asked.names:
        return None, []
    notes: list[str] = []
    out: dict[str, Any] = {"requested": list(asked.names), "given_by": asked.given_by, "margin": asked.margin}
    out["headline_metric"] = headline
    if asked.zero_shot:
        out["zero_shot"] = {"column": "base", "model": "the base model prompted as the tuned model is (decoded once)"}
    k = asked.k
    if asked.few_shot:
        if few_shot is None or side is None:
            reason = "the held-out data has no prompt/answer pairs to ask"
            out["few_shot"] = {"k": asked.k, "status": "not evaluated", "reason": reason}
            notes.append(f"few-shot baseline: not evaluated: {reason}")
        else:
            choice, fitted = few_shot.choice, side.fitted
            k = len(choice.examples)
            out["few_shot"] = {"column": "few_shot", **choice.record(), **fitted.record(k)}
            if k < asked.k:
                notes.append(f"few-shot baseline: only {k} usable training example(s) for k = {asked.k}")
            if note := fitted.note(k):
                notes.append(note)
    finding, why = verdict(headline, rows.get(headline) if headline else None, asked.names, k, asked.margin)
    if finding is not None:
        diagnosis.findings.append(finding)
        out["verdict"] = finding.evidence
    elif why is not None:
        diagnosis.not_checked.append({"finding": FINDING, "reason": why})
        out["verdict"] = f"not checked: {why}"
    else:
        out["verdict"] = f"the tuned model beats every baseline on {headline} by more than {asked.margin:g}"
    return out, notes


def _num(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.4f}"


def _delta(base: Any, tuned: Any) -> str:
    return "-" if not isinstance(base, (int, float)) or not isinstance(tuned, (int, float)) else f"{tuned - base:+.4f}"


def headers(evaluation) -> dict[str, str]:
    """Each metric column's header: the base is "zero-shot" when that baseline was asked for; few-shot gives k."""
    asked = evaluation.baselines or {}
    few = asked.get("few_shot") or {}
    return {
        "base": "zero-shot (base)" if "zero_shot" in asked.get("requested", ()) else "base",
        "few_shot": f"few-shot (k={few.get('chosen', few.get('k'))})",
        "tuned": "tuned",
    }


def columns(evaluation, num=_num, delta=_delta) -> list[tuple[str, Any]]:
    """(header, row -> cell) for a metric table: the sides side by side, then tuned minus each baseline;
    `num` and `delta(baseline, tuned)` write the numbers."""
    names = headers(evaluation)
    few = any("few_shot" in row for row in evaluation.metrics.values())
    sides = ["base", *(["few_shot"] if few else []), "tuned"]
    cells: list[tuple[str, Any]] = [(names[s], lambda row, s=s: num(row.get(s))) for s in sides]
    cells.append(("tuned − base", lambda row: delta(row.get("base"), row.get("tuned"))))
    if few:
        cells.append(("tuned − few-shot", lambda row: delta(row.get("few_shot"), row.get("tuned"))))
    return cells


def summary(evaluation) -> list[str]:
    """The lines under the metric table: which examples the few-shot prompts hold, and the verdict."""
    asked = evaluation.baselines
    if not asked:
        return []
    lines = []
    few = asked.get("few_shot") or {}
    if few.get("examples"):
        shown_examples = ", ".join(e["source"] for e in few["examples"])
        lines.append(f"few-shot examples (seed {few['seed']}, from the training data, none held out): {shown_examples}")
    verdict_text = str(asked.get("verdict"))
    if any(f.finding == FINDING for f in evaluation.diagnosis):
        verdict_text = f"a baseline comes within {asked.get('margin')} of the tuned model on {asked.get('headline_metric')}: see {FINDING}"
    lines.append(f"baselines (from the {asked.get('given_by')}): {verdict_text}")
    return lines
