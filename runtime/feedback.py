"""Feedback on served exchanges: a JSONL file, written by people or tools, that `ftc data from-logs` and the A/B page
(`ftc report --ab`) read next to the logs of `ftc serve --log`.

One object a line: {"id": "<exchange id>", "verdict": "good" | "bad", "correction": "<the right answer>",
"note": "<free text>"}; correction and note are optional. `id` is the exchange's (runtime/exchanges.py: the client's
X-Request-Id, or the server's answer id). A line that is not such an object, a second line for the same id, or an
id that no exchange of the logs has is an error naming the file and the line: feedback that matches nothing would
otherwise be lost without a word.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from ftc.runtime.records import RecordModel

VERDICTS = ("good", "bad")


class Feedback(RecordModel):
    """One verdict on one exchange."""

    id: str = Field(min_length=1)
    verdict: Literal["good", "bad"]
    correction: str | None = None  # the answer the model should have given
    note: str | None = None


class FeedbackError(Exception):
    """A feedback line that cannot be used: the message names the file and the line."""


def read_feedback(path: Path, known: Collection[str]) -> dict[str, tuple[int, Feedback]]:
    """exchange id -> (line, verdict) for every line of the file; `known` holds the ids of the logs' exchanges."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FeedbackError(f"{path}: cannot be read ({exc})") from exc
    found: dict[str, tuple[int, Feedback]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise FeedbackError(f"{where}: not a JSON object ({exc}); write one object a line") from exc
        if not isinstance(data, dict):
            raise FeedbackError(f'{where}: not a JSON object; write {{"id": ..., "verdict": "good" or "bad"}}')
        try:
            item = Feedback.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "record"
            hint = {"verdict": 'verdict is "good" or "bad"', "id": "id is the exchange's id, a non-empty string"}
            shown = hint.get(key, "a line has id, verdict and an optional correction and note")
            raise FeedbackError(f"{where}: {key}: {first['msg']} ({shown})") from exc
        if item.correction is not None and not item.correction.strip():
            raise FeedbackError(f"{where}: correction is empty; give the right answer, or leave correction out")
        if item.id in found:
            raise FeedbackError(f"{where}: a second verdict on {item.id!r} (the first is line {found[item.id][0]})")
        if item.id not in known:
            raise FeedbackError(f"{where}: no exchange of the logs has id {item.id!r}; check the id, or the log folder")
        found[item.id] = (number, item)
    return found
