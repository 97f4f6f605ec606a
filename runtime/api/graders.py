"""OpenAI reinforcement fine-tuning -> ftc GRPO: graders become [[method.rewards]] declared as data, and the items
become the chat records ftc's GRPO trains on.

Graders (each reads the model's answer as input = "{{sample.output_text}}"; a reference is "{{item.FIELD}}", a field
of the training item, or literal text):
    string_check eq, item field       exact_match against that field (whitespace stripped, as OpenAI's eq is exact)
    string_check eq / ne, literal     regex: the whole answer is (eq) or is not (ne) the text
    string_check like / ilike, literal  regex: the answer contains the text (ilike: in any case)
    text_similarity rouge_l           similarity (ROUGE-L F-measure) against the field
    multi                             each of the above, weighted as calculate_output's weighted sum says
Refused, with the reason: python graders (ftc never runs code it was sent); score_model and label_model graders
(they ask an LLM to grade each answer; ftc's reward_model reward is a trained scalar reward model, declared in the
server's own spec); a text_similarity metric other than rouge_l; a reference that varies per item where ftc's
reward has one fixed pattern (like/ilike/ne against a field); any other template.

Items: OpenAI's reinforcement item is a conversation that ends with a user turn, plus fields its graders read. ftc's
GRPO trains on chats whose last assistant turn is the reference answer (what `ftc eval` compares with), so the
item's first graded field (or the grader's literal reference) is appended as that turn. Fields no grader reads are
left out, and the job's events count them. A line that is not such an item is kept as it is, so that the check
names it at its own line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ftc.runtime.api.requests import RequestProblem

PARAM = "method.reinforcement.grader"
_OUTPUT = re.compile(r"^\{\{\s*sample\.output_text\s*\}\}$")
_ITEM = re.compile(r"^\{\{\s*item\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*\*\s*)?([A-Za-z_][A-Za-z0-9_]*)(?:\s*\*\s*(\d+(?:\.\d+)?))?\s*$")
REFUSED = {
    "python": "python graders run code from the request, and ftc never runs code it was sent",
    "score_model": (
        "score_model graders ask an LLM to grade each answer; ftc rewards with a trained reward model instead "
        "(train one with method kind = \"reward\", then declare it in the server's reinforcement spec as "
        "[[method.rewards]] kind = \"reward_model\")"
    ),
    "label_model": "label_model graders ask an LLM to label each answer; ftc does not call an LLM grader",
}


def rewards_for(grader: Any) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """(the rewards, the item field whose value is the reference answer, or else the literal reference)."""
    if not isinstance(grader, dict):
        raise RequestProblem("method.reinforcement.grader must be an object with a type", PARAM)
    kind = grader.get("type")
    if kind in REFUSED:
        raise RequestProblem(f"{PARAM}: {kind} graders are refused: {REFUSED[kind]}", PARAM)
    if kind == "multi":
        return _multi(grader)
    reward, field, literal = _single(grader, PARAM)
    return [reward], field, literal


def _reference(grader: dict[str, Any], where: str) -> tuple[str | None, str | None]:
    if not isinstance(grader.get("input"), str) or not _OUTPUT.match(grader["input"]):
        raise RequestProblem(f"{where}.input must be \"{{{{sample.output_text}}}}\" (the model's answer); got {grader.get('input')!r}", f"{where}.input")
    reference = grader.get("reference")
    if not isinstance(reference, str):
        raise RequestProblem(f"{where}.reference must be a string", f"{where}.reference")
    found = _ITEM.match(reference)
    if found:
        return found.group(1), None
    if "{{" in reference:
        raise RequestProblem(f"{where}.reference: only {{{{item.FIELD}}}} or literal text is supported, not {reference!r}", f"{where}.reference")
    return None, reference


def _single(grader: dict[str, Any], where: str) -> tuple[dict[str, Any], str | None, str | None]:
    kind = grader.get("type")
    if kind in REFUSED:
        raise RequestProblem(f"{where}: {kind} graders are refused: {REFUSED[kind]}", where)
    allowed = {"string_check": {"type", "name", "input", "reference", "operation"}, "text_similarity": {"type", "name", "input", "reference", "evaluation_metric", "pass_threshold"}}
    if kind not in allowed:
        raise RequestProblem(f"{where}.type {kind!r}: ftc maps string_check, text_similarity and multi graders", f"{where}.type")
    unknown = sorted(set(grader) - allowed[kind])
    if unknown:
        raise RequestProblem(f"{where}.{unknown[0]}: unknown field of a {kind} grader", f"{where}.{unknown[0]}")
    field, literal = _reference(grader, where)
    if kind == "text_similarity":
        if grader.get("evaluation_metric") != "rouge_l":
            raise RequestProblem(f"{where}.evaluation_metric {grader.get('evaluation_metric')!r}: ftc's similarity reward computes rouge_l (or chrF); use rouge_l", f"{where}.evaluation_metric")
        if field is None:
            raise RequestProblem(f"{where}.reference: text_similarity compares with a field of each item ({{{{item.FIELD}}}}), not a fixed text", f"{where}.reference")
        return {"kind": "similarity", "metric": "rouge_l", "field": field, "weight": 1.0}, field, None
    operation = grader.get("operation")
    if operation == "eq" and field is not None:
        return {"kind": "exact_match", "field": field, "weight": 1.0}, field, None
    if field is not None:
        raise RequestProblem(f"{where}: string_check {operation!r} against a field of each item has no ftc reward (its regex reward has one pattern); use eq, or a literal reference", f"{where}.operation")
    escaped = re.escape(literal)
    patterns = {"eq": (rf"\A\s*{escaped}\s*\Z", True), "ne": (rf"\A\s*{escaped}\s*\Z", False), "like": (escaped, True), "ilike": (f"(?i){escaped}", True)}
    if operation not in patterns:
        raise RequestProblem(f"{where}.operation {operation!r}: one of eq, ne, like, ilike", f"{where}.operation")
    pattern, match = patterns[operation]
    return {"kind": "regex", "pattern": pattern, "match": match, "weight": 1.0}, None, literal


def _multi(grader: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None, str | None]:
    graders = grader.get("graders")
    if not isinstance(graders, dict) or not graders:
        raise RequestProblem(f"{PARAM}.graders must name at least one grader", f"{PARAM}.graders")
    weights = _weights(grader.get("calculate_output"), set(graders))
    rewards, field, literal = [], None, None
    for name, inner in graders.items():
        if not isinstance(inner, dict):
            raise RequestProblem(f"{PARAM}.graders.{name} must be a grader object", f"{PARAM}.graders.{name}")
        reward, own_field, own_literal = _single(inner, f"{PARAM}.graders.{name}")
        if name in weights:
            rewards.append({**reward, "weight": weights[name]})
        field, literal = field or own_field, literal if literal is not None else own_literal
    return rewards, field, literal


def _weights(formula: Any, names: set[str]) -> dict[str, float]:
    """calculate_output as a weighted sum, e.g. "0.7 * exact + 0.3 * similar" or "(a + b) / 2"."""
    where = f"{PARAM}.calculate_output"
    if not isinstance(formula, str):
        raise RequestProblem(f"{where} must be a formula such as \"0.5 * a + 0.5 * b\"", where)
    body, divisor = formula.strip(), 1.0
    whole = re.match(r"^\((.*)\)\s*/\s*(\d+(?:\.\d+)?)$", body)
    if whole:
        body, divisor = whole.group(1), float(whole.group(2))
    weights: dict[str, float] = {}
    for term in body.split("+"):
        found = _TERM.match(term)
        if not found or found.group(2) not in names or (found.group(1) and found.group(3)):
            raise RequestProblem(
                f"{where} {formula!r}: ftc declares rewards as a weighted sum of the graders, such as \"0.7 * a + 0.3 * b\" or \"(a + b) / 2\"",
                where,
            )
        weight = float(found.group(1) or found.group(3) or 1.0) / divisor
        weights[found.group(2)] = weights.get(found.group(2), 0.0) + weight
    if not all(0 <= w <= 100 for w in weights.values()) or not any(weights.values()):
        raise RequestProblem(f"{where}: every weight must be between 0 and 100, and one above 0", where)
    return weights


def items_to_chats(source: Path, target: Path, field: str | None, literal: str | None, read: set[str]) -> tuple[dict[str, int], list[int]]:
    """Write OpenAI reinforcement items as ftc GRPO chats, line for line. Returns the count of each field left out,
    and the lines whose item lacks the reference field (kept as they are)."""
    left_out: dict[str, int] = {}
    missing: list[int] = []
    with source.open("r", encoding="utf-8", errors="surrogateescape", newline="") as src, target.open("w", encoding="utf-8", errors="surrogateescape", newline="") as out:
        for number, line in enumerate(src, 1):
            written = _item_line(line, field, literal, read, left_out)
            if written is None:
                missing.append(number)
                written = line
            out.write(written)
    return left_out, missing


def _item_line(line: str, field: str | None, literal: str | None, read: set[str], left_out: dict[str, int]) -> str | None:
    try:
        item = json.loads(line)
    except ValueError:
        return line
    messages = item.get("messages") if isinstance(item, dict) else None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return line
    reference = item.get(field) if field is not None else literal
    if reference is None:
        return None
    answer = reference if isinstance(reference, str) else json.dumps(reference, ensure_ascii=False)
    chat = {"messages": [*messages, {"role": "assistant", "content": answer}]}
    for key, value in item.items():
        if key == "messages":
            continue
        if key in read:
            chat[key] = value
        else:
            left_out[key] = left_out.get(key, 0) + 1
    return json.dumps(chat, ensure_ascii=False) + "\n"
