"""Tokenize every example exactly as the generated script will, and measure the splits.

The functions that tokenize live in templates/prepare.py, which the generated script includes
verbatim: the counts in the lock are the counts the run sees, and the script checks that they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ftc.templates import prepare

from .data import DataProblem, Record, iter_records


@dataclass
class SplitStats:
    name: str
    records: int = 0  # read from the file (or the share of it this split received)
    examples: int = 0  # kept after the overlong policy
    tokens: int = 0  # kept tokens, after truncation
    loss_tokens: int = 0
    longest: int = 0  # before the policy
    lengths: list[int] = field(default_factory=list)  # kept lengths, for the packing prediction
    dropped: list[tuple[int, int]] = field(default_factory=list)  # (source line, tokens)
    truncated: list[tuple[int, int]] = field(default_factory=list)
    overlong: list[tuple[int, int]] = field(default_factory=list)  # refused under overlong = "error"
    no_loss: list[int] = field(default_factory=list)  # source lines whose examples train no token
    failed: list[tuple[int, str]] = field(default_factory=list)  # (source line, why it could not be tokenized)


def read_records(path: Path, display: str) -> tuple[list[Record], list[DataProblem]]:
    records: list[Record] = []
    problems: list[DataProblem] = []
    for item in iter_records(path, display):
        (problems if isinstance(item, DataProblem) else records).append(item)  # type: ignore[arg-type]
    return records, problems


def split_records(records: list[Record], share: float, seed: int) -> tuple[list[Record], list[Record]]:
    held = set(prepare.held_out_indices(len(records), share, seed))
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def measure(
    name: str,
    records: Iterable[Record],
    tokenizer,
    chat_template: str | None,
    data_format: str,
    *,
    max_length: int,
    overlong: str,
    train_on_all: bool,
    tick: Callable[[], None] | None = None,
) -> SplitStats:
    stats = SplitStats(name)
    for record in records:
        stats.records += 1
        if tick:
            tick()
        try:
            if data_format == "preference":
                n = max(prepare.preference_lengths(tokenizer, chat_template, record.value))
                ids, mask = [0] * n, [1] * n
            else:
                ids, mask = prepare.tokenize_record(tokenizer, chat_template, data_format, record.value, train_on_all)
        except (ValueError, KeyError, TypeError) as exc:
            stats.failed.append((record.line, str(exc)))
            continue
        n = len(ids)
        stats.longest = max(stats.longest, n)
        if n > max_length:
            if overlong == "error":
                stats.overlong.append((record.line, n))
                continue
            if overlong == "drop":
                stats.dropped.append((record.line, n))
                continue
            stats.truncated.append((record.line, n))
            ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            stats.no_loss.append(record.line)
            continue
        stats.examples += 1
        stats.tokens += len(ids)
        stats.loss_tokens += sum(mask)
        stats.lengths.append(len(ids))
    return stats
