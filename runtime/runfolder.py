"""The run folder's record, run.json: what ran, on what, how it ended, and what was verified afterwards.

A run folder (runs/<name>/<run-id>/) holds:
  ftc.lock.json   a copy of the plan that ran (the run is self-describing even after the build changes)
  run.json        this record: written when the run starts, updated when each session ends and by `ftc merge`
  events.jsonl    what the training script reported, one JSON object per line (logs, checkpoints, end)
  train.log       everything the script printed
  checkpoints/    sealed checkpoints (checkpoint-N/ftc-checkpoint.json marks a complete one)
  logs/           TensorBoard (or other trackers') logs
  final/          the adapter or the full model, with the tokenizer and the locked chat template
  merged/         after `ftc merge`: the merged model, ready for vLLM
  samples.json    base versus tuned answers to a few held-out prompts, written at the end of `ftc run`
  eval.json       after `ftc eval`: metrics base versus tuned, lm-eval, gates, diagnosis, every answer
  eval-endpoint.json  after `ftc eval --endpoint URL`: the same, with the tuned side as the server answers
  eval/lm_eval/   the local lm-eval task `ftc eval` writes from the held-out split
  report.html     after `ftc report`: one self-contained page with plots
  serve.log       what vLLM printed under `ftc serve` (the parity results are in run.json under "serve", one per mode)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftc.compiler.build.lock import LOCK_NAME, read_lock, write_atomic

RUN_RECORD = "run.json"
EVENTS = "events.jsonl"


class RunFolderError(Exception):
    """A run folder is missing or incomplete; the message says what to do."""


def read_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_RECORD
    if not path.is_file():
        raise RunFolderError(f"{run_dir} is not a run folder: it has no {RUN_RECORD} (runs are made by `ftc run`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc}); it was edited or cut short") from exc


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    write_atomic(run_dir / RUN_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")


def update_record(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge top-level fields into run.json (atomically) and return the new record."""
    record = read_record(run_dir)
    record.update(fields)
    write_record(run_dir, record)
    return record


def run_lock(run_dir: Path) -> dict[str, Any]:
    """The plan this run executed (the copy taken when it started)."""
    path = run_dir / LOCK_NAME
    if not path.is_file():
        raise RunFolderError(f"{run_dir} has no {LOCK_NAME}; it was not made by `ftc run`")
    return read_lock(path)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete line of events.jsonl (a line being written is skipped)."""
    path = run_dir / EVENTS
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events
