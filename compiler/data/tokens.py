"""Tokenize every example exactly as the generated script will, and measure the splits.

The functions that tokenize live in templates/prepare.py, which the generated script includes
verbatim: the counts in the lock are the counts the run sees, and the script checks that they are.

Records are tokenized in chunks, each with one call to the fast tokenizer. A long stream is handed
to a pool of worker processes once this process has spent a while on it (and taken back should they
prove slower); the workers send back a few numbers per record, never token ids, and the chunks are
counted in the order they were read, so the statistics are the same whichever way they were computed.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from ftc.compiler.data.read import Record
from ftc.templates import prepare

CHUNK = 64  # records per tokenizer call, and per task sent to a worker
START_WORKERS_AFTER_S = 5.0  # seconds in this process before workers start, and of their trial against it
WORKERS_ENV = "FTC_WORKERS"  # processes that tokenize; 1 keeps everything in this process


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


def default_workers() -> int:
    """How many processes tokenize: FTC_WORKERS when set, else one per CPU this process may use."""
    value = os.environ.get(WORKERS_ENV, "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{WORKERS_ENV} must be a whole number of processes, 1 or more, not {value!r}")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
    workers: int | None = None,
    start_workers_after_s: float = START_WORKERS_AFTER_S,
) -> SplitStats:
    """Tokenize a split's records (a stream, read once, a chunk at a time) and count them under the overlong
    policy. Worker processes (workers = None takes default_workers()) take over once this process has spent
    start_workers_after_s on the stream, and give it back if they are slower. tick is called once per record."""
    job = _Job(tokenizer, chat_template, data_format, max_length, train_on_all)
    stats = SplitStats(name)
    chunks = _chunks(records)
    for outcomes in _outcomes(job, chunks, default_workers() if workers is None else workers, start_workers_after_s):
        for outcome in outcomes:
            stats.records += 1
            if tick:
                tick()
            _count(stats, outcome, max_length, overlong)
    return stats


@dataclass(frozen=True)
class _Job:
    """What tokenizing a chunk needs; sent once to each worker."""

    tokenizer: Any
    chat_template: str | None
    data_format: str
    max_length: int
    train_on_all: bool


# One record's measure: (source line, tokens before the overlong policy, loss tokens within max_length, None),
# or (source line, 0, 0, why it could not be tokenized).
Outcome = tuple[int, int, int, str | None]
Chunk = list[tuple[int, Any]]  # (source line, record value)


def _chunks(records: Iterable[Record]) -> Iterator[Chunk]:
    it = iter(records)
    while chunk := [(r.line, r.value) for r in itertools.islice(it, CHUNK)]:
        yield chunk


def _outcomes(job: _Job, chunks: Iterator[Chunk], workers: int, start_after_s: float) -> Iterator[list[Outcome]]:
    """Each chunk's outcomes, in the order read. Chunks are tokenized here until start_after_s have passed, so
    that a short stream never waits for workers to start; the rest go to a pool of `workers` processes, and
    come back here if the pool breaks or proves slower than this process (on a machine busy with other work)."""
    started, done = time.perf_counter(), 0
    for chunk in chunks:
        outcomes = _tokenize_chunk(job, chunk)
        done += _tokens(outcomes)
        yield outcomes
        if workers > 1 and time.perf_counter() - started >= start_after_s:
            break
    else:
        return  # the stream ended before a pool was worth starting
    left = yield from _pooled(job, chunks, workers, done / (time.perf_counter() - started), start_after_s)
    for chunk in itertools.chain(left, chunks):
        yield _tokenize_chunk(job, chunk)


def _pooled(job: _Job, chunks: Iterator[Chunk], workers: int, rate_here: float, trial_s: float) -> Generator[list[Outcome], None, deque[Chunk]]:
    """Outcomes from a pool of workers, at most two chunks per worker ahead of the one being counted. The pool
    stops taking chunks when, over trial_s from its first result, it tokenized fewer tokens a second than
    rate_here. Returns the chunks read and not counted: none, unless a worker was killed."""
    pending: deque[Chunk] = deque()
    futures: deque[Future] = deque()
    trial_started: float | None = None  # when the first result came: the workers are up
    trial_tokens, judged = 0, False
    # spawn: fresh interpreters, never forks of this one, whose tokenizer may already have started threads.
    # Like any spawning code, this needs the caller's main module to be guarded by `if __name__ == "__main__"`.
    with ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(job,)) as pool:
        try:
            for chunk in chunks:
                pending.append(chunk)
                futures.append(pool.submit(_tokenize_in_worker, chunk))
                if len(futures) < 2 * workers:
                    continue
                outcomes = futures.popleft().result()
                pending.popleft()
                yield outcomes
                if trial_started is None:
                    trial_started = time.perf_counter()
                elif not judged:
                    trial_tokens += _tokens(outcomes)
                    spent = time.perf_counter() - trial_started
                    if spent >= trial_s:
                        judged = True
                        if trial_tokens / spent < rate_here:
                            break  # slower than this process alone: the machine is busy with other work
            while futures:
                yield futures.popleft().result()
                pending.popleft()
        except BrokenProcessPool:
            pass
    return pending


def _tokens(outcomes: list[Outcome]) -> int:
    return sum(n for _, n, _, _ in outcomes)


_worker_job: _Job | None = None


def _start_worker(job: _Job) -> None:
    """Pool initializer: the workers are the parallelism, so the tokenizer keeps to one thread in each."""
    global _worker_job
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_job = job


def _tokenize_in_worker(chunk: Chunk) -> list[Outcome]:
    assert _worker_job is not None
    return _tokenize_chunk(_worker_job, chunk)


def _tokenize_chunk(job: _Job, chunk: Chunk) -> list[Outcome]:
    """Render each record, encode the whole chunk with one tokenizer call, and measure each record. A record
    that cannot be rendered or encoded fails alone."""
    failed: dict[int, str] = {}
    rendered: list[list[tuple[str, list]]] = []
    for k, (_, value) in enumerate(chunk):
        try:
            rendered.append(_render(job, value))
        except (ValueError, KeyError, TypeError) as exc:
            failed[k] = _why(exc, job.data_format)
            rendered.append([])
    try:
        flat = iter(prepare.encode_batch(job.tokenizer, [text for texts in rendered for text in texts]))
        encoded = [list(itertools.islice(flat, len(texts))) for texts in rendered]
    except (ValueError, KeyError, TypeError):  # find the record that broke the batch: encode each alone
        encoded = []
        for k, texts in enumerate(rendered):
            try:
                encoded.append(prepare.encode_batch(job.tokenizer, texts))
            except (ValueError, KeyError, TypeError) as exc:
                failed[k] = _why(exc, job.data_format)
                encoded.append([])
    outcomes: list[Outcome] = []
    for k, ((line, _), pieces) in enumerate(zip(chunk, encoded)):
        if k in failed:
            outcomes.append((line, 0, 0, failed[k]))
        elif job.data_format == "preference":  # DPO trains the longer of prompt + chosen, prompt + rejected
            n = max(len(ids) for ids, _ in pieces)
            outcomes.append((line, n, min(n, job.max_length), None))
        else:  # one sequence: chat, completion, text, or unpaired (KTO's prompt + completion, loss on the completion)
            ids, mask = pieces[0]
            outcomes.append((line, len(ids), sum(mask[: job.max_length]), None))
    return outcomes


def _why(exc: Exception, data_format: str) -> str:
    """Why a record could not be tokenized, in words: a KeyError says only the key."""
    if isinstance(exc, KeyError):
        return f"it has no {exc.args[0]!r} field, which {data_format} data has"
    return str(exc)


def _render(job: _Job, value: Any) -> list[tuple[str, list]]:
    if job.data_format == "preference":
        return prepare.render_preference(job.tokenizer, job.chat_template, value)
    return [prepare.render_record(job.tokenizer, job.chat_template, job.data_format, value, job.train_on_all)]


def _count(stats: SplitStats, outcome: Outcome, max_length: int, overlong: str) -> None:
    """Add one record to the split's statistics under the overlong policy."""
    line, n, loss, why = outcome
    if why is not None:
        stats.failed.append((line, why))
        return
    stats.longest = max(stats.longest, n)
    if n > max_length:
        if overlong == "error":
            stats.overlong.append((line, n))
            return
        if overlong == "drop":
            stats.dropped.append((line, n))
            return
        stats.truncated.append((line, n))
        n = max_length
    if not loss:
        stats.no_loss.append(line)
        return
    stats.examples += 1
    stats.tokens += n
    stats.loss_tokens += loss
    stats.lengths.append(n)
