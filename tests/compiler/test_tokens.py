"""compiler/tokens.py measures in chunks, with one tokenizer call per chunk, and in worker processes for a long
stream. Whichever path it takes, the statistics are those of tokenizing each record alone with
templates/prepare.py and applying the overlong policy to it, down to the order of the listed lines. Unpaired
(KTO) records count as one sequence, prompt + completion, whose loss is on the completion whatever train_on."""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest
from tiny import make_tokenizer

from ftc.compiler.data import tokens
from ftc.compiler.data.read import Record
from ftc.compiler.data.tokens import SplitStats, measure
from ftc.templates import prepare

TURNS = [
    {"role": "system", "content": "You triage tickets."},
    {"role": "user", "content": "my invoice was charged twice"},
    {"role": "assistant", "content": '{"category": "billing"}', "weight": 0},
    {"role": "user", "content": "and the login fails"},
    {"role": "assistant", "content": '{"category": "login"}'},
]
LONG = "The quick brown fox jumps over the lazy dog. " * 8
PROMPT = [{"role": "user", "content": "Ticket: refund?"}]
ANSWER = [{"role": "assistant", "content": "billing"}]

# Each format's records, among them one too long for MAX_LENGTH, one that trains no token and one that cannot be
# tokenized (a list prompt with a string completion; a lone surrogate, which only the tokenizer refuses).
RECORDS = {
    "chat": [
        {"messages": TURNS},
        {"messages": TURNS[1:3]},  # its one answer has weight 0: no loss
        {"messages": [{"role": "user", "content": LONG}, {"role": "assistant", "content": "yes"}]},
        {"messages": [{"role": "user", "content": "hello \ud800"}, {"role": "assistant", "content": "no"}]},
        {"messages": [{"role": "user", "content": "thanks"}, {"role": "assistant", "content": LONG}]},
        {"messages": TURNS[:2] + [{"role": "assistant", "content": "yes"}] + TURNS[3:]},
    ],
    "completion": [
        {"prompt": "Ticket: refund?", "completion": " billing"},
        {"prompt": PROMPT, "completion": ANSWER},
        {"prompt": PROMPT, "completion": "billing"},  # cannot be tokenized
        {"prompt": LONG, "completion": " crash"},
        {"prompt": PROMPT + ANSWER + [{"role": "user", "content": LONG}], "completion": ANSWER},
    ],
    "text": [{"text": "hello world"}, {"text": LONG}, {"text": "login password crash"}, {"text": "bad \udfff"}],
    "preference": [
        {"prompt": PROMPT, "chosen": ANSWER, "rejected": [{"role": "assistant", "content": LONG}]},
        {"prompt": "Ticket: refund?", "chosen": " billing", "rejected": " login"},
        {"prompt": PROMPT, "chosen": "billing", "rejected": ANSWER},  # cannot be tokenized
    ],
    "unpaired": [  # KTO: prompt + completion, the loss on the completion whatever train_on says
        {"prompt": PROMPT, "completion": ANSWER, "label": True},
        {"prompt": "Ticket: refund?", "completion": " login", "label": False},
        {"prompt": PROMPT, "completion": "billing", "label": True},  # cannot be tokenized
        {"prompt": PROMPT, "completion": [{"role": "assistant", "content": LONG}], "label": False},
        {"prompt": [{"role": "user", "content": LONG + LONG}], "completion": ANSWER, "label": True},  # truncated: no loss
    ],
}
MAX_LENGTH = 40


def reference(records: list[Record], tokenizer, data_format: str, overlong: str, train_on_all: bool) -> SplitStats:
    """One record at a time with the per-example functions of prepare.py, as the generated script does."""
    stats = SplitStats("train")
    for record in records:
        stats.records += 1
        try:
            if data_format == "preference":
                n = max(prepare.preference_lengths(tokenizer, tokenizer.chat_template, record.value))
                ids, mask = [0] * n, [1] * n
            else:
                ids, mask = prepare.tokenize_record(tokenizer, tokenizer.chat_template, data_format, record.value, train_on_all)
        except (ValueError, KeyError, TypeError) as exc:
            stats.failed.append((record.line, str(exc)))
            continue
        stats.longest = max(stats.longest, len(ids))
        fitted = prepare.fit_length(ids, mask, MAX_LENGTH, "truncate" if overlong == "truncate" else "drop")
        if fitted is None:
            (stats.overlong if overlong == "error" else stats.dropped).append((record.line, len(ids)))
            continue
        if len(fitted[0]) < len(ids):
            stats.truncated.append((record.line, len(ids)))
        ids, mask = fitted
        if not any(mask):
            stats.no_loss.append(record.line)
            continue
        stats.examples += 1
        stats.tokens += len(ids)
        stats.loss_tokens += sum(mask)
        stats.lengths.append(len(ids))
    return stats


def records_of(data_format: str, copies: int) -> list[Record]:
    """The format's records repeated, so that they span several chunks, each at its own line."""
    values = RECORDS[data_format] * copies
    return [Record(line, value) for line, value in enumerate(values, start=1)]


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.mark.parametrize("overlong", ["error", "drop", "truncate"])
@pytest.mark.parametrize("data_format", list(RECORDS))
@pytest.mark.parametrize("train_on_all", [False, True])
def test_chunks_measure_as_each_record_alone(tokenizer, monkeypatch, data_format, overlong, train_on_all):
    monkeypatch.setattr(tokens, "CHUNK", 4)  # chunks that split the repeated records differently each time round
    records = records_of(data_format, 3)
    ticks = []
    stats = measure("train", iter(records), tokenizer, tokenizer.chat_template, data_format, max_length=MAX_LENGTH, overlong=overlong,
                    train_on_all=train_on_all, tick=lambda: ticks.append(1), workers=1)
    expected = reference(records, tokenizer, data_format, overlong, train_on_all)
    assert stats == expected
    assert len(ticks) == len(records)
    assert stats.failed and stats.longest > MAX_LENGTH  # the cases above are exercised
    assert stats.no_loss or data_format != "chat" or train_on_all
    if data_format == "unpaired" and overlong == "truncate":  # a prompt that fills max_length leaves no loss
        assert stats.no_loss == [5, 10, 15]


def test_worker_processes_measure_as_this_one(tokenizer, monkeypatch):
    """A pool started after the first chunk: its chunks come back in order, with the same counts."""
    monkeypatch.setattr(tokens, "CHUNK", 5)
    records = records_of("chat", 10)
    pooled = measure("train", iter(records), tokenizer, tokenizer.chat_template, "chat", max_length=MAX_LENGTH, overlong="truncate",
                     train_on_all=False, workers=2, start_workers_after_s=0)
    assert pooled == reference(records, tokenizer, "chat", "truncate", False)


class InProcessPool:
    """Stands in for the pool, in this process. With breaks_after, it tokenizes that many chunks and then breaks,
    as when a worker is killed."""

    breaks_after: int | None = None

    def __init__(self, workers, context, initializer, initargs):
        initializer(*initargs)
        self.submitted = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def submit(self, fn, chunk):
        future = Future()
        self.submitted += 1
        if self.breaks_after is None or self.submitted <= self.breaks_after:
            future.set_result(fn(chunk))
        else:
            future.set_exception(BrokenProcessPool("a worker was killed"))
        return future


@pytest.fixture()
def in_process_pool(monkeypatch):
    monkeypatch.setattr(tokens, "ProcessPoolExecutor", InProcessPool)
    monkeypatch.setattr(tokens, "_worker_job", None)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # the initializer sets it
    return InProcessPool


def test_a_broken_pool_leaves_its_chunks_to_this_process(tokenizer, monkeypatch, in_process_pool):
    monkeypatch.setattr(tokens, "CHUNK", 2)
    monkeypatch.setattr(in_process_pool, "breaks_after", 2)
    records = records_of("chat", 4)
    stats = measure("train", iter(records), tokenizer, tokenizer.chat_template, "chat", max_length=MAX_LENGTH, overlong="drop",
                    train_on_all=False, workers=3, start_workers_after_s=0)
    assert stats == reference(records, tokenizer, "chat", "drop", False)


def test_a_pool_slower_than_this_process_stops_taking_chunks(tokenizer, monkeypatch, in_process_pool):
    """Judged on its first results (here at once, against an unbeatable rate), the pool hands the stream back."""
    monkeypatch.setattr(tokens, "CHUNK", 2)
    records = records_of("chat", 4)
    job = tokens._Job(tokenizer, tokenizer.chat_template, "chat", MAX_LENGTH, False)
    chunks = tokens._chunks(records)
    pooled = tokens._pooled(job, chunks, 1, float("inf"), 0.0)
    outcomes = []
    while True:
        try:
            outcomes += next(pooled)
        except StopIteration as stop:
            assert not stop.value  # every chunk the pool took was counted
            break
    # one worker's window is two chunks: the first result starts the trial, the second ends it, a third was taken
    assert len(outcomes) == 3 * tokens.CHUNK < len(records)
    rest = [o for chunk in chunks for o in tokens._tokenize_chunk(job, chunk)]
    assert outcomes + rest == tokens._tokenize_chunk(job, [(r.line, r.value) for r in records])


def test_a_chunk_whose_batch_fails_fails_only_its_bad_record(tokenizer):
    """The tokenizer refuses a lone surrogate: the chunk is encoded again record by record."""
    chunk = [(1, {"text": "hello"}), (2, {"text": "bad \udfff"}), (3, {"text": "world"})]
    job = tokens._Job(tokenizer, None, "text", MAX_LENGTH, False)
    outcomes = tokens._tokenize_chunk(job, chunk)
    assert [line for line, _, _, why in outcomes if why] == [2]
    alone = [tokens._tokenize_chunk(job, [item]) for item in chunk]
    assert outcomes == [o for one in alone for o in one]


def test_a_token_carries_loss_when_it_starts_inside_a_span(tokenizer):
    """encode_batch's masks, for texts of every format at once, against the offsets of each text encoded alone."""
    examples = [("chat", {"messages": TURNS}), ("chat", {"messages": TURNS[1:3]}), ("completion", {"prompt": PROMPT, "completion": ANSWER}),
                ("completion", {"prompt": "Ticket: refund?", "completion": " billing"}), ("text", {"text": LONG}),
                ("unpaired", {"prompt": PROMPT, "completion": ANSWER, "label": False})]
    rendered = [prepare.render_record(tokenizer, tokenizer.chat_template, fmt, value, False) for fmt, value in examples]
    for (text, spans), (ids, mask) in zip(rendered, prepare.encode_batch(tokenizer, rendered), strict=True):
        alone = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        assert ids == alone["input_ids"]
        assert mask == [1 if any(a <= start < b for a, b in spans) else 0 for start, _ in alone["offset_mapping"]]


def test_workers_default_to_the_cpus_unless_ftc_workers_says(monkeypatch):
    monkeypatch.delenv(tokens.WORKERS_ENV, raising=False)
    assert tokens.default_workers() >= 1
    monkeypatch.setenv(tokens.WORKERS_ENV, "1")
    assert tokens.default_workers() == 1
    monkeypatch.setenv(tokens.WORKERS_ENV, "all")
    with pytest.raises(ValueError, match="FTC_WORKERS must be a whole number"):
        tokens.default_workers()
