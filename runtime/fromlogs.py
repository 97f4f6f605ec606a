"""`ftc data from-logs`: served exchanges and their feedback become a new version of a spec's training data.

Every exchange of the logs is accounted for in the report, kept or dropped with the reason:
  - no verdict in the feedback file: dropped (counted);
  - a correction: the exchange's prompt with the correction as the answer, kept ("changed": the served answer was
    replaced); when the verdict is "bad" and the served answer is there, also a preference pair (prompt, chosen =
    the correction, rejected = the served answer) for --pairs, made too when the example repeats train (the
    pair still teaches the preference) but not when it leaks or fails the checks; repeated pairs are dropped;
  - verdict "good" without a correction: kept with --keep-good, dropped otherwise; "bad" without one: dropped;
  - a prompt that the spec's held-out split asks (runtime/specdata.py: user turns, case-folded): refused, so that
    evaluation never sees a training example;
  - a repeat of a train example or of an earlier new one (case-folded, whitespace collapsed): dropped;
  - an example that fails the spec's own record and token checks: dropped with the checks' reasons;
  - an id that more than one exchange carries: dropped (the feedback cannot say which one it judges).
Exchanges whose text redaction changed are kept like any other, and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.data.clean import jsonl
from ftc.compiler.data.records import record_problems
from ftc.runtime.exchanges import Exchange, log_files, read_exchanges
from ftc.runtime.feedback import Feedback, read_feedback
from ftc.runtime.specdata import Checker, SpecData, file_sha256, prompt_key, record_digest

REPORT_FORMAT = 1


@dataclass
class Entry:
    """What became of one exchange."""

    file: str
    line: int
    id: str
    action: str  # "kept", "changed" (kept with the correction as its answer) or "dropped"
    reason: str
    redactions: int = 0
    pair: bool = False  # a preference pair was made of it
    value: dict[str, Any] | None = None  # the example, while it is a candidate

    def as_dict(self) -> dict[str, Any]:
        out = {"file": self.file, "line": self.line, "id": self.id, "action": self.action, "reason": self.reason}
        if self.redactions:
            out["redactions"] = self.redactions
        if self.pair:
            out["pair"] = True
        return out


@dataclass
class FromLogs:
    entries: list[Entry] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    pair_drops: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        kept = [e for e in self.entries if e.action != "dropped"]
        reasons = Counter(e.reason.split(":")[0] for e in self.entries if e.action == "dropped")
        return {
            "exchanges": len(self.entries),
            "kept": len(kept),
            "corrected": sum(e.action == "changed" for e in kept),
            "kept_good": sum(e.action == "kept" for e in kept),
            "dropped": sum(reasons.values()),
            "dropped_by_reason": dict(sorted(reasons.items())),
            "redacted_kept": sum(bool(e.redactions) for e in kept),
            "redacted_dropped": sum(bool(e.redactions) and e.action == "dropped" for e in self.entries),
            "pairs": len(self.pairs),
            "pairs_dropped": len(self.pair_drops),
        }

    def report(self, out: Path, pairs: Path | None, train: int) -> dict[str, Any]:
        return {
            "format_version": REPORT_FORMAT,
            "inputs": self.inputs,
            "out": str(out),
            "pairs_out": str(pairs) if pairs else None,
            "train_records": train,
            "new_records": len(self.examples),
            "counts": self.counts(),
            "warnings": self.warnings,
            "exchanges": [e.as_dict() for e in self.entries],
            "pairs_dropped": self.pair_drops,
        }


NO_VERDICT = "no verdict: the feedback file has no line for this id"
GOOD_NOT_KEPT = "rated good: answers rated good are kept with --keep-good"
BAD_NO_CORRECTION = "rated bad without a correction: nothing to train on (no right answer)"


def example_of(exchange: Exchange, answer: str, fmt: str) -> tuple[dict[str, Any] | None, str | None]:
    """The exchange's prompt with `answer` as a record of the spec's format, or why it cannot be one."""
    if exchange.endpoint == "chat":
        if exchange.messages is None:
            return None, "a chat exchange without messages"
        messages = [dict(m) for m in exchange.messages]
        if fmt == "chat":
            return {"messages": [*messages, {"role": "assistant", "content": answer}]}, None
        return {"prompt": messages, "completion": [{"role": "assistant", "content": answer}]}, None
    if exchange.prompt is None:
        return None, "a completions exchange without a prompt"
    if fmt == "chat":
        return None, "a /v1/completions request has a raw prompt, not messages; the spec trains chat data"
    return {"prompt": exchange.prompt, "completion": answer}, None


def pair_of(example: dict[str, Any], rejected: str) -> dict[str, Any]:
    """A preference pair from a kept correction and the served answer it replaced."""
    if "messages" in example:
        prompt, chosen = example["messages"][:-1], example["messages"][-1:]
        return {"prompt": prompt, "chosen": chosen, "rejected": [{"role": "assistant", "content": rejected}]}
    if isinstance(example["prompt"], list):
        return {"prompt": example["prompt"], "chosen": example["completion"], "rejected": [{"role": "assistant", "content": rejected}]}
    return {"prompt": example["prompt"], "chosen": example["completion"], "rejected": rejected}


def from_logs(logs: Path, data: SpecData, feedback_path: Path | None, keep_good: bool, checker: Checker | None = None) -> FromLogs:
    """Read every exchange and its feedback and decide what becomes of each. Raises ExchangeError (a malformed log
    line) or FeedbackError (a bad feedback line) before anything is decided."""
    exchanges = list(read_exchanges(logs))
    ids = Counter(ex.id for _, _, ex in exchanges)
    feedback: dict[str, tuple[int, Feedback]] = read_feedback(feedback_path, ids) if feedback_path else {}
    result = FromLogs()
    files = log_files(logs) if logs.is_dir() else [logs]
    result.inputs = {
        "logs": {str(f): file_sha256(f) for f in files},
        "feedback": {str(feedback_path): file_sha256(feedback_path)} if feedback_path else {},
        **data.sha256(),
        "keep_good": keep_good,
    }
    result.warnings = list(data.warnings)
    lines_of_id: dict[str, list[str]] = {}
    for file, line, ex in exchanges:
        lines_of_id.setdefault(ex.id, []).append(f"{file}:{line}")
    candidates: list[tuple[Entry, Exchange, Feedback]] = []
    for file, line, ex in exchanges:
        entry = Entry(str(file), line, ex.id, "dropped", "", ex.redactions)
        result.entries.append(entry)
        verdict = feedback.get(ex.id, (0, None))[1]
        if verdict is None:
            entry.reason = NO_VERDICT
            continue
        if ids[ex.id] > 1:
            entry.reason = f"ambiguous id: {ex.id!r} is logged more than once ({', '.join(lines_of_id[ex.id])}), so its feedback cannot say which"
            continue
        if verdict.correction is not None:
            answer, entry.action = verdict.correction, "changed"
        elif verdict.verdict == "good" and keep_good:
            if ex.answer is None or ex.status >= 400:
                entry.reason = f"failed request: rated good, but the request failed (HTTP {ex.status}) and has no answer"
                continue
            answer, entry.action = ex.answer, "kept"
        else:
            entry.reason = GOOD_NOT_KEPT if verdict.verdict == "good" else BAD_NO_CORRECTION
            continue
        value, why = example_of(ex, answer, data.format)
        if value is None:
            entry.action, entry.reason = "dropped", f"not trainable: {why}"
            continue
        held = data.held_out.get(prompt_key(value))
        if held is not None:
            entry.action, entry.reason = "dropped", f"held-out prompt: the spec evaluates on this prompt ({held}); training on it would leak"
            continue
        entry.value = value
        candidates.append((entry, ex, verdict))
    _check(result, candidates, data, checker)
    return result


def _check(result: FromLogs, candidates: list[tuple[Entry, Exchange, Feedback]], data: SpecData, checker: Checker | None) -> None:
    """Duplicates, then the spec's record and token checks, on the candidates; pairs of the corrections kept."""
    values = [entry.value for entry, _, _ in candidates]
    problems, truncated = checker.problems(values) if checker else ([[] for _ in values], set())  # type: ignore[arg-type]
    seen: dict[bytes, str] = {}
    seen_pairs: set[bytes] = set()
    for i, (entry, ex, verdict) in enumerate(candidates):
        value = entry.value
        assert value is not None
        key = record_digest(value)
        where = f"{entry.file}:{entry.line}"
        if key in data.train_seen:
            entry.action, entry.reason = "dropped", f"duplicate: repeats train line {data.train_seen[key]} (case-folded, whitespace collapsed)"
        elif key in seen:
            entry.action, entry.reason = "dropped", f"duplicate: repeats the new example of {seen[key]}"
        elif problems[i]:
            entry.action, entry.reason = "dropped", "failed the spec's checks: " + "; ".join(problems[i])
        else:
            seen[key] = where
            result.examples.append(value)
            how = "the served answer replaced by the correction" if entry.action == "changed" else "rated good, kept as served"
            entry.reason = how + ("; training truncates it to data.max_length" if i in truncated else "")
            if entry.redactions:
                entry.reason += f"; {entry.redactions} span(s) of it were redacted when logged"
        pairable = verdict.verdict == "bad" and verdict.correction is not None and ex.answer is not None
        if pairable and (entry.action != "dropped" or entry.reason.startswith("duplicate")):  # a repeat still pairs
            _add_pair(result, entry, pair_of(value, ex.answer), seen_pairs)
        entry.value = None


def _add_pair(result: FromLogs, entry: Entry, pair: dict[str, Any], seen: set[bytes]) -> None:
    where = {"file": entry.file, "line": entry.line, "id": entry.id}
    problems = record_problems(pair, "preference")
    key = record_digest(pair)
    if problems:
        result.pair_drops.append({**where, "reason": "; ".join(m for m, _ in problems)})
    elif key in seen:
        result.pair_drops.append({**where, "reason": "duplicate of an earlier pair"})
    else:
        seen.add(key)
        result.pairs.append(pair)
        entry.pair = True


def data_version(data: SpecData, examples: list[dict[str, Any]]) -> str:
    """The new train file: the current one, then the new examples. A JSONL train file is copied as it is, so that
    a diff of the two data versions shows the added lines only; another format is written as ftc's JSONL."""
    if data.train_path.suffix == ".jsonl" and data.spec.data.format != "openai":
        head = data.train_path.read_text(encoding="utf-8")
        return (head if not head or head.endswith("\n") else head + "\n") + jsonl(examples)
    return jsonl([r.value for r in data.train] + examples)
