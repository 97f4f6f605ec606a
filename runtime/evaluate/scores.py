"""What `ftc eval` makes of the answers: the metric rows and the lm-eval tasks of eval.json, base versus tuned,
and the spec's gates checked against them."""

from __future__ import annotations

from typing import Any

from ftc.compiler.spec.gates import Gate, parse_gate
from ftc.runtime.evaluate import lmeval
from ftc.runtime.evaluate import metrics as m

SIDES = ("base", "tuned")
ALL_SIDES = ("base", "few_shot", "tuned")  # the base model prompted with examples, when the few_shot baseline is asked for


def metric_rows(names, sides: dict[str, list[str] | None], lengths, refs, label_field, validator, schema_note, ref_lengths):
    """{"metric": {"base": float|None, ["few_shot": ...], "tuned": ..., "note": ..., ["reference": ...]}} for every
    listed metric (a few_shot column when `sides` has that side)."""
    scores = {
        side: (m.compute(names, answers, lengths[side], refs, label_field=label_field, validator=validator) if answers is not None else None)
        for side, answers in sides.items()
    }
    # intrinsic metrics also describe the references: what the answers should look like
    references = [r.reference for r in refs]
    intrinsic = m.compute(
        [n for n in names if n in ("json_valid", "distinct_n", "mean_length")], references, ref_lengths, refs
    )
    rows: dict[str, dict[str, Any]] = {}
    keys = next((list(s) for s in scores.values() if s is not None), list(names))
    for key in keys:
        notes = {}
        row: dict[str, Any] = {}
        for side in (s for s in ALL_SIDES if s in SIDES or s in sides):
            score = scores.get(side)
            if score is None:
                row[side] = None
                notes[side] = "compare_base = false: the base model was not evaluated"
            else:
                row[side] = score[key].value
                notes[side] = score[key].note
        if key == "json_schema" and schema_note:
            notes = dict.fromkeys(notes, schema_note)
        distinct_notes = {n for n in notes.values() if n}
        row["note"] = (
            None if not distinct_notes
            else distinct_notes.pop() if len(distinct_notes) == 1
            else "; ".join(f"{side}: {note}" for side, note in notes.items() if note)
        )
        if key in intrinsic:
            row["reference"] = intrinsic[key].value
        rows[key] = row
    return rows


def gate_scores(rows, lm_results) -> dict[str, dict[str, float | None]]:
    """side -> metric or task -> its number, as the gates read them; zero_shot reads the base's numbers (the
    zero-shot baseline is the base as prompted), few_shot the few-shot column (lm-eval tasks are not run few-shot)."""
    scores: dict[str, dict[str, float | None]] = {side: {} for side in ALL_SIDES}
    for name, row in rows.items():
        for side in ALL_SIDES:
            scores[side][name] = row.get(side)
    for task, result in lm_results.items():
        for side in ALL_SIDES:
            values = result.get(side)
            scores[side][task] = values.get(result["metric"]) if values and result.get("metric") else None
    scores["zero_shot"] = scores["base"]
    return scores


def check_gates(gates: list[str], scores: dict[str, dict[str, float | None]], why: dict[str, str]) -> list[dict[str, Any]]:
    """Each gate with its two sides' numbers; a gate on a metric that has no number is an error that says why."""
    results = []
    for text in gates:
        try:
            gate = parse_gate(text)
        except ValueError as exc:
            results.append({"gate": text, "holds": False, "left": None, "right": None, "error": str(exc)})
            continue
        missing = [
            f"{side}.{metric}" for side, metric in operands(gate) if scores.get(side, {}).get(metric) is None
        ]
        if missing:
            reasons = "; ".join(
                f"{name}: {why.get(name) or why.get(name.split('.', 1)[1]) or 'not computed: the plan does not evaluate it'}" for name in missing
            )
            results.append({"gate": text, "holds": False, "left": None, "right": None, "error": f"cannot be checked: {reasons}"})
            continue
        left = scores[gate.side][gate.metric]
        right = gate.offset + (scores[gate.ref_side][gate.ref_metric] if gate.ref_side and gate.ref_metric else 0.0)
        results.append({"gate": text, "holds": bool(gate.holds(scores)), "left": left, "right": right, "error": None})
    return results


def operands(gate: Gate) -> list[tuple[str, str]]:
    pairs = [(gate.side, gate.metric)]
    if gate.ref_side and gate.ref_metric:
        pairs.append((gate.ref_side, gate.ref_metric))
    return pairs


def lm_eval_record(sides, general, unavailable, task, answer_texts, fmt) -> dict[str, dict[str, Any]]:
    """Per lm-eval task: its scores on each side, or why it has none; for the held-out task, how far lm-eval's
    answers agree with ftc's."""
    out: dict[str, dict[str, Any]] = {}
    names = ([lmeval.HELDOUT_TASK] if task or fmt == "text" else []) + general
    for name in names:
        kind = "held_out" if name == lmeval.HELDOUT_TASK else "general"
        if name in unavailable or (kind == "held_out" and task is None):
            reason = unavailable.get(name) or "the held-out data has no prompt/answer pairs (text data)"
            out[name] = {"status": "unavailable", "kind": kind, "metric": None, "examples": 0, "base": None, "tuned": None, "reason": reason}
            continue
        first = next((s.lm_eval[name] for s in (sides["tuned"], sides["base"]) if s is not None and "error" not in s.lm_eval[name]), None)
        if first is None:
            reason = "; ".join(s.lm_eval[name]["error"] for s in (sides["tuned"], sides["base"]) if s is not None)
            out[name] = {"status": "unavailable", "kind": kind, "metric": None, "examples": 0, "base": None, "tuned": None, "reason": reason}
            continue
        entry: dict[str, Any] = {
            "status": "ok", "kind": kind, "metric": first["metric"], "examples": first["examples"],
            "base": None, "tuned": None, "reason": None,
        }
        for side in SIDES:
            s = sides[side]
            if s is None:
                continue
            result = s.lm_eval[name]
            if "error" in result:  # the endpoint could not run this task
                entry["reason"] = f"{side}: {result['error']}"
                continue
            entry[side] = result["scores"]
            if kind == "held_out":
                theirs = [sample["filtered_resps"][0] for sample in result["samples"]]
                ours = answer_texts[side] or []
                agree = sum(a.strip() == b.strip() for a, b in zip(theirs, ours, strict=True))
                entry.setdefault("answers_agree_with_ftc", {})[side] = f"{agree}/{len(ours)}"
                differ = next(((k, a, b) for k, (a, b) in enumerate(zip(theirs, ours)) if a.strip() != b.strip()), None)
                if differ:
                    k, a, b = differ
                    entry.setdefault("first_disagreement", {})[side] = {"example": k, "lm_eval": a, "ftc": b}
        if sides["base"] is None:
            entry["reason"] = "compare_base = false: the base model was not evaluated"
        if sides["tuned"] is not None and sides["tuned"].served:
            entry["tuned_via"] = "the endpoint, with lm-eval's local-completions backend"
        out[name] = entry
    return out
