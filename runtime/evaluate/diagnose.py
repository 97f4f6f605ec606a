"""What went wrong in a run, named as practitioners name it, with the remedy they would give.

Read from the run's events.jsonl (training and validation loss by step) and the scores `ftc eval` measured.
Each finding is checked by one rule, with its thresholds here so that a reviewer can argue with them:

  overfitting           the validation loss reached its lowest value at some step (the turn), then rose by more
                        than OVERFIT_RISE (relative, and at least OVERFIT_RISE_ABS nats) by the last evaluation,
                        while the training loss kept falling. Needs validation losses at two steps or more.
  underfitting          the last training loss and the last validation loss (when there is one) are both above
                        UNDERFIT_LOSS = 1.0 nat per token. A model that has learned to reproduce its answers gives
                        the reference tokens a geometric-mean probability well above e^-1 = 37%: the quickstart
                        goes from 2.7 to 0.55 nats in 24 steps; a random model starts near ln(vocab) (about 10).
                        Checked for SFT only: a DPO loss is not a per-token likelihood (it starts at ln 2).
  forgetting            a general lm-eval task (evaluation.lm_eval_tasks) scores lower for the tuned model than
                        for the base by more than FORGETTING_DROP (absolute) and by more than two standard errors
                        of the difference, so that a small sample does not raise the alarm on noise.
  mode_collapse         the tuned answers loop (repetition, seq-rep-4, above COLLAPSE_REPETITION and
                        COLLAPSE_REPETITION_GAP above the base's), or are far less varied than the references
                        (distinct-2 below COLLAPSE_DISTINCT_RATIO of the references' and below the base's), or
                        many prompts get one and the same answer while their references differ.
  format_inconsistency  most references are JSON (REFERENCE_JSON_SHARE), but fewer than FORMAT_MIN_VALID of the
                        tuned answers parse (or validate against the spec's schema); or answers that should be
                        short run out of max_new_tokens without ever emitting the stop token.
Each rule that could not be checked says why (`not_checked`), rather than passing silently.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from ftc.compiler.methods import METHODS

OVERFIT_RISE = 0.02
OVERFIT_RISE_ABS = 0.01
UNDERFIT_LOSS = 1.0
FORGETTING_DROP = 0.02
COLLAPSE_REPETITION = 0.2
COLLAPSE_REPETITION_GAP = 0.1
COLLAPSE_DISTINCT_RATIO = 0.5
COLLAPSE_SAME_ANSWER = 0.5  # share of answers that repeat another prompt's answer
REFERENCE_JSON_SHARE = 0.9
FORMAT_MIN_VALID = 0.9
RUNAWAY_SHARE = 0.25  # share of answers that hit max_new_tokens while the references are short


@dataclass(frozen=True)
class Finding:
    finding: str
    evidence: str
    remedy: str


@dataclass(frozen=True)
class Diagnosis:
    findings: list[Finding]
    not_checked: list[dict[str, str]]  # {"finding": ..., "reason": ...}

    def record(self) -> dict[str, Any]:
        return {"diagnosis": [asdict(f) for f in self.findings], "not_checked": self.not_checked}


@dataclass(frozen=True)
class Answers:
    """What the answer rules look at: the texts, and how many tokens each took (and the budget)."""

    references: list[str]
    base: list[str] | None  # None when compare_base = false
    tuned: list[str]
    tuned_lengths: list[int]
    reference_lengths: list[int]
    max_new_tokens: int
    schema_valid: float | None = None  # tuned json_schema score, when measured


def loss_curves(events: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, training loss) and (step, validation loss) as the run logged them; a resumed run's repeated
    steps keep their last value."""
    train: dict[int, float] = {}
    val: dict[int, float] = {}
    for e in events:
        if e.get("event") != "log" or "step" not in e:
            continue
        if isinstance(e.get("loss"), (int, float)):
            train[int(e["step"])] = float(e["loss"])
        if isinstance(e.get("eval_loss"), (int, float)):
            val[int(e["step"])] = float(e["eval_loss"])
    return sorted(train.items()), sorted(val.items())


def _loss_near(curve: list[tuple[int, float]], step: int) -> float:
    """The training loss logged at or just before `step` (the first one when none is before)."""
    before = [loss for s, loss in curve if s <= step]
    return before[-1] if before else curve[0][1]


def overfitting(train: list[tuple[int, float]], val: list[tuple[int, float]]) -> Finding | None:
    turn_step, lowest = min(val, key=lambda p: (p[1], p[0]))
    last_step, last = val[-1]
    rise = last - lowest
    if last_step == turn_step or rise <= max(OVERFIT_RISE * lowest, OVERFIT_RISE_ABS):
        return None
    if train:
        at_turn, at_end = _loss_near(train, turn_step), train[-1][1]
        if at_end >= at_turn:
            return None  # both rose: not the overfitting signature (an unstable run, or a learning rate too high)
        falling = f", while the training loss fell from {at_turn:.4f} to {at_end:.4f}"
    else:
        falling = " (no training loss was logged to compare)"
    return Finding(
        "overfitting",
        f"validation loss was lowest at step {turn_step} ({lowest:.4f}) and rose to {last:.4f} by step {last_step} "
        f"(+{rise / lowest:.1%}){falling}; the turn was at step {turn_step}",
        f"stop near step {turn_step}: set training.max_steps = {turn_step} or training.early_stopping_patience "
        "(final/ then keeps the best checkpoint); or add training data, lower training.learning_rate, raise "
        "method.lora_dropout or training.weight_decay",
    )


def underfitting(train: list[tuple[int, float]], val: list[tuple[int, float]], capacity: str | None = None) -> Finding | None:
    final_train = train[-1][1]
    final_val = val[-1][1] if val else None
    if final_train <= UNDERFIT_LOSS or (final_val is not None and final_val <= UNDERFIT_LOSS):
        return None
    first = train[0][1]
    trend = f"from {first:.4f} at step {train[0][0]}" if len(train) > 1 else "(one value logged)"
    still = ""
    if len(train) >= 4:
        half = len(train) // 2
        early, late = train[:half], train[half:]
        if sum(v for _, v in late) / len(late) < sum(v for _, v in early) / len(early) * 0.95:
            still = "; it was still falling when training stopped"
    shown_val = f" and validation loss {final_val:.4f}" if final_val is not None else ""
    return Finding(
        "underfitting",
        f"training loss ended at {final_train:.4f} {trend}{shown_val}, both above {UNDERFIT_LOSS} nat per token "
        f"(the model gives the reference tokens less than {math.exp(-UNDERFIT_LOSS):.0%} probability on geometric "
        f"average){still}",
        "train longer (training.max_steps or training.epochs), raise training.learning_rate, "
        + (f"{capacity}, " if capacity else "")
        + "or use a larger base model; check that the data teaches one consistent answer per prompt",
    )


def forgetting(lm_eval: dict[str, dict[str, Any]]) -> tuple[list[Finding], list[str]]:
    """Findings for general tasks that dropped, and the tasks that could not be compared (with why)."""
    findings, unchecked = [], []
    for task, result in sorted(lm_eval.items()):
        if result.get("kind") != "general":
            continue
        if result.get("status") != "ok" or not result.get("base") or not result.get("tuned"):
            unchecked.append(f"{task}: {result.get('reason') or 'no base score'}")
            continue
        metric = result["metric"]
        base, tuned = result["base"][metric], result["tuned"][metric]
        se = [result[side].get(f"{metric}_stderr") for side in ("base", "tuned")]
        noise = 2 * math.sqrt(se[0] ** 2 + se[1] ** 2) if all(isinstance(s, (int, float)) for s in se) else 0.0
        drop = base - tuned
        if drop > FORGETTING_DROP and drop > noise:
            findings.append(
                Finding(
                    "forgetting",
                    f"{task} {metric} fell from {base:.4f} (base) to {tuned:.4f} (tuned), -{drop:.4f}, more than "
                    f"{FORGETTING_DROP} and than two standard errors ({noise:.4f}) on {result.get('examples')} examples",
                    "use LoRA (or a lower method.r) rather than full fine-tuning, lower training.learning_rate or "
                    "train fewer steps, and mix general instruction data into the training set",
                )
            )
    return findings, unchecked


def mode_collapse(a: Answers) -> Finding | None:
    from ftc.runtime.evaluate.metrics import distinct, repetition

    tuned_rep = repetition(a.tuned).value
    base_rep = repetition(a.base).value if a.base is not None else None
    if tuned_rep is not None and tuned_rep > COLLAPSE_REPETITION and (base_rep is None or tuned_rep > base_rep + COLLAPSE_REPETITION_GAP):
        base_part = f" (base {base_rep:.2f})" if base_rep is not None else ""
        return Finding(
            "mode_collapse",
            f"tuned answers repeat themselves: seq-rep-4 {tuned_rep:.2f}{base_part}, above {COLLAPSE_REPETITION}",
            _COLLAPSE_REMEDY,
        )
    tuned_d2, ref_d2 = distinct(a.tuned, 2).value, distinct(a.references, 2).value
    base_d2 = distinct(a.base, 2).value if a.base is not None else None
    if (
        tuned_d2 is not None
        and ref_d2 is not None
        and tuned_d2 < COLLAPSE_DISTINCT_RATIO * ref_d2
        and (base_d2 is None or tuned_d2 < base_d2)
    ):
        base_part = f", base {base_d2:.2f}" if base_d2 is not None else ""
        return Finding(
            "mode_collapse",
            f"tuned answers are far less varied than the references: distinct-2 {tuned_d2:.2f} against "
            f"{ref_d2:.2f} for the references{base_part}",
            _COLLAPSE_REMEDY,
        )
    counts = Counter(t.strip() for t in a.tuned)
    answer, most = counts.most_common(1)[0] if counts else ("", 0)
    repeated = sum(c for c in counts.values() if c > 1) / len(a.tuned) if a.tuned else 0.0
    refs_repeated = sum(c for c in Counter(r.strip() for r in a.references).values() if c > 1) / len(a.references) if a.references else 0.0
    if len(a.tuned) >= 4 and repeated > COLLAPSE_SAME_ANSWER and refs_repeated < repeated / 2:
        return Finding(
            "mode_collapse",
            f"{repeated:.0%} of the prompts get an answer that another prompt also gets (the commonest, {most} times: "
            f"{_shown(answer)}), while {refs_repeated:.0%} of the references repeat",
            _COLLAPSE_REMEDY,
        )
    return None


_COLLAPSE_REMEDY = (
    "make the training data more diverse (deduplicate near-identical answers: data.dedup = \"normalized\"), "
    "train fewer steps or at a lower learning rate; at inference, sampling (temperature, nucleus top_p) or a "
    "repetition penalty hides loops but does not fix the model"
)


def format_inconsistency(a: Answers, is_json) -> Finding | None:
    n = len(a.references)
    problems: list[str] = []
    ref_json = sum(map(is_json, a.references)) / n
    if ref_json >= REFERENCE_JSON_SHARE:
        valid = sum(map(is_json, a.tuned)) / n
        if valid < FORMAT_MIN_VALID:
            bad = next(t for t in a.tuned if not is_json(t))
            problems.append(
                f"{ref_json:.0%} of the references are JSON, but only {valid:.0%} of the tuned answers parse "
                f"(the first that does not: {_shown(bad)})"
            )
        elif a.schema_valid is not None and a.schema_valid < FORMAT_MIN_VALID:
            problems.append(f"the tuned answers parse as JSON ({valid:.0%}), but only {a.schema_valid:.0%} match the spec's JSON Schema")
    longest_ref = max(a.reference_lengths, default=0)
    runaway = sum(length >= a.max_new_tokens for length in a.tuned_lengths) / n
    endless = longest_ref < a.max_new_tokens / 2 and runaway > RUNAWAY_SHARE
    if endless:
        problems.append(
            f"{runaway:.0%} of the tuned answers ran to max_new_tokens ({a.max_new_tokens}) without the stop token, "
            f"though the longest reference is {longest_ref} tokens: the model does not end its turn"
        )
    if not problems:
        return None
    remedy = _FORMAT_REMEDY
    if endless:
        remedy = "check that the end-of-turn token carries loss (the chat template marks it as part of the answer); " + remedy
    return Finding("format_inconsistency", "; ".join(problems), remedy)


def _shown(text: str) -> str:
    stripped = text.strip()
    if not stripped:
        return f"blank, {len(text)} whitespace character(s)" if text else "empty"
    return repr(stripped[:80]) + ("…" if len(stripped) > 80 else "")


_FORMAT_REMEDY = (
    "add more examples of the exact format, make the format consistent across the training data, state it in a "
    "system prompt (data.system_prompt), or train longer; at serving time, constrained (JSON-schema) decoding "
    "enforces it"
)


def diagnose(
    events: list[dict[str, Any]],
    method_kind: str,
    answers: Answers | None,
    lm_eval: dict[str, dict[str, Any]],
) -> Diagnosis:
    from ftc.runtime.evaluate.metrics import parses_as_json

    findings: list[Finding] = []
    unchecked: list[dict[str, str]] = []

    def skip(name: str, reason: str) -> None:
        unchecked.append({"finding": name, "reason": reason})

    train, val = loss_curves(events)
    if len(val) >= 2:
        if f := overfitting(train, val):
            findings.append(f)
    elif not METHODS[method_kind].evaluates:
        skip("overfitting", f"{method_kind.upper()} logs no validation loss (it samples answers; ftc eval scores the held-out prompts)")
    else:
        skip("overfitting", f"validation loss was logged at {len(val)} step(s); a turn needs two or more (set training.eval_steps)")
    if not METHODS[method_kind].token_loss:
        skip("underfitting", f"a {method_kind.upper()} loss is not a per-token likelihood, so no loss level means 'high'")
    elif not train:
        skip("underfitting", "no training loss was logged")
    elif f := underfitting(train, val, METHODS[method_kind].capacity):
        findings.append(f)

    lost, unavailable = forgetting(lm_eval)
    findings += lost
    if not any(r.get("kind") == "general" for r in lm_eval.values()):
        skip("forgetting", "no general lm-eval task was run (evaluation.lm_eval_tasks is empty)")
    elif unavailable:
        skip("forgetting", "; ".join(unavailable))

    if answers is None or not answers.references:
        skip("mode_collapse", "no held-out answers were generated")
        skip("format_inconsistency", "no held-out answers were generated")
    else:
        if f := mode_collapse(answers):
            findings.append(f)
        if f := format_inconsistency(answers, parses_as_json):
            findings.append(f)
    return Diagnosis(findings, unchecked)
