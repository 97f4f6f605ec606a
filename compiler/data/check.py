"""`ftc data check SPEC`: every problem of the spec's data as file:line, and what the data looks like.

The checks are the compiler's (`ftc compile` runs the same ones and refuses to build on errors): each record
against its format (records.py), then tokenization with the locked chat template, the overlong policy and
the loss mask (tokens.py, which shares templates/prepare.py with the generated script). On top, the report
measures what a practitioner looks at before training: examples per split, tokens per example and their
spread, what the overlong policy would cut, turns per conversation, duplicates (exact, and after
whitespace/case normalisation), the balance of answers when they form a small set of labels, the share of
tokens that carry loss, and the padding that padding to max_length would waste next to packing's.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.build.compile import _is_hub, chat_template_for
from ftc.compiler.data.clean import Cleaning, clean_value
from ftc.compiler.data.packing import predict_packed_count
from ftc.compiler.data.read import DataProblem, Record, position, survey, unit_of
from ftc.compiler.data.splits import DataSource
from ftc.compiler.data.tokens import SplitStats, measure
from ftc.compiler.diagnostics import Diagnostic, errors
from ftc.compiler.hashing import FileHasher
from ftc.compiler.plan.inputs import InputError, resolve_model
from ftc.compiler.plan.modelinfo import load_tokenizer, tokenizer_info
from ftc.compiler.plan.resolve import PACKING_STRATEGY
from ftc.compiler.spec.checks import OVERLAP_HINT, digest, extra_fields, file_problem, final_answer, label_of, lines_of, normalize, validate
from ftc.compiler.spec.validate import LoadedSpec, display_path

LABEL_SET_LIMIT = 20  # answers that take at most this many distinct values are treated as labels
LABEL_FIELD_LIMIT = 1000  # a named label field with more distinct values is reported as such, not counted
IMBALANCE_SHARE = 0.8  # one label with more than this share of the examples is heavy imbalance
HISTOGRAM_BINS = 10


@dataclass
class SplitReport:
    name: str
    file: str
    stats: SplitStats
    turns: list[int] = field(default_factory=list)
    exact_duplicates: list[list[int]] = field(default_factory=list)  # groups of source lines
    normalized_duplicates: list[list[int]] = field(default_factory=list)
    labels: dict[str, int] | None = None
    label_field: str | None = None  # the spec's data.label_field; None when labels are inferred from the answers
    unlabeled: list[int] = field(default_factory=list)  # lines without a value for the label field
    contradicted: list[tuple[int, int]] = field(default_factory=list)  # unpaired: (line, the earlier line it contradicts)
    too_many_labels: bool = False

    def as_dict(self, max_length: int, packing_strategy: str) -> dict[str, Any]:
        s = self.stats
        lengths = sorted(s.lengths)
        out: dict[str, Any] = {
            "file": self.file,
            "records": s.records,
            "examples": s.examples,
            "tokens": s.tokens,
            "loss_tokens": s.loss_tokens,
            "loss_token_share": _ratio(s.loss_tokens, s.tokens),
            "tokens_per_example": _spread(lengths),
            "histogram": histogram(lengths, max_length),
            "overlong": {"error": len(s.overlong), "dropped": len(s.dropped), "truncated": len(s.truncated)},
            "overlong_share": _ratio(len(s.overlong) + len(s.dropped) + len(s.truncated), s.records),
            "turns_per_conversation": _spread(sorted(self.turns)) if self.turns else None,
            "duplicates": {"exact": self.exact_duplicates, "normalized": self.normalized_duplicates},
            "labels": self.labels,
            "label_field": self.label_field,
            "unlabeled": self.unlabeled,
            "contradicted_labels": [list(pair) for pair in self.contradicted],
            "padding_waste": padding_waste(lengths, max_length, packing_strategy),
        }
        return out


@dataclass
class DataReport:
    spec: str
    format: str | None  # the format the files hold: "openai" when read as ftc's (the splits are of what trains)
    max_length: int
    packing_strategy: str
    diagnostics: list[Diagnostic]  # the spec's own, and warnings about the data as a whole
    problems: list[DataProblem]  # every bad record, file:line
    splits: list[SplitReport]
    cleaning: dict[str, int] | None = None  # examples the spec's cleaning removed and changed; the splits are after it

    @property
    def ok(self) -> bool:
        return not self.problems and not errors(self.diagnostics) and not any(
            s.stats.overlong or s.stats.no_loss or s.stats.failed for s in self.splits
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "format": self.format,
            "ok": self.ok,
            "errors": [str(p) for p in self.problems] + [d.headline() for d in errors(self.diagnostics)] + token_errors(self.splits),
            "warnings": [d.headline() for d in self.diagnostics if not d.is_error],
            "cleaning": self.cleaning,
            "splits": {s.name: s.as_dict(self.max_length, self.packing_strategy) for s in self.splits},
        }


def check_data(spec_path: Path, root: Path, progress=None) -> DataReport:
    loaded, diags, summary = validate(spec_path)
    if loaded is None:
        return DataReport(str(spec_path), None, 0, "bfd", diags, [], [])
    d = loaded.spec.data
    strategy = PACKING_STRATEGY
    record_line = re.compile(r"^(\S+:(row )?\d+: |\.\.\. and \d+ more problems in )")
    spec_diags = [x for x in diags if not record_line.match(x.message)]  # record problems are listed in full below
    problems: list[DataProblem] = []
    for key in ("train", "validation"):
        rel = getattr(d, key)
        path = loaded.resolve(rel) if rel and file_problem(loaded.base_dir, rel, "data file") is None else None
        if path is not None:
            cleaning = Cleaning.of(d)
            transform = (lambda value: clean_value(value, cleaning)[0]) if cleaning.active else None
            problems += survey(path, display_path(path), transform, extra_fields(loaded.spec), d.format == "openai" or None).problems
    report = DataReport(display_path(spec_path), (summary.converted_from or summary.format) if summary else None, d.max_length, strategy, spec_diags, problems, [])
    if summary is None or summary.format is None or errors(spec_diags):  # no format known: nothing to tokenize by
        return report
    try:
        with FileHasher() as hasher:
            source = resolve_model(loaded.spec.model.base, loaded.spec.model.revision, loaded.base_dir, root, hasher, _is_hub(loaded))
        tokenizer = load_tokenizer(source)
    except InputError as exc:
        report.diagnostics.append(loaded.diag(exc.key, exc.message, exc.hint))
        return report
    chat_template, _ = chat_template_for(loaded, tokenizer_info(tokenizer), root)
    fmt = "chat" if d.convert_to == "chat" else summary.format
    train_digests: set[bytes] = set()
    overlap: list[int] = []
    data = DataSource(loaded, root)
    if data.cleaning.active:
        cleaning: list[dict[str, Any]] = []
        for key in data.keys:
            for _ in data.records(key, cleaning):
                pass
        report.cleaning = {"removed": sum(e["action"] == "removed" for e in cleaning), "changed": sum(e["action"] == "changed" for e in cleaning)}
    for split, key, records in data.splits():
        tick = progress(f"tokenizing {split}", None) if progress else None
        collector = SplitCollector(fmt, d.label_field or ("label" if fmt == "unpaired" else None))
        stats = measure(split, collector.watch(records()), tokenizer, chat_template, fmt, max_length=d.max_length, overlong=d.overlong, train_on_all=d.train_on == "all", tick=tick)
        report.splits.append(collector.report(split, data.display(key), stats))
        if split == "train":
            train_digests = set(collector.normalized)
        else:
            overlap = sorted(line for digest, lines in collector.normalized.items() if digest in train_digests for line in lines)
    report.diagnostics += data_warnings(loaded, report.splits, overlap, fmt)
    return report


class SplitCollector:
    """What the summary needs of each record, kept small: turn counts, 16-byte digests for duplicates, and label
    counts: of the spec's label field, or of the answers while they still look like a small set of labels."""

    def __init__(self, fmt: str, label_field: str | None = None) -> None:
        self.fmt = fmt
        self.label_field = label_field
        self.turns: list[int] = []
        self.exact: dict[bytes, list[int]] = {}
        self.normalized: dict[bytes, list[int]] = {}
        self.answers: Counter[str] | None = Counter()
        self.answered = 0
        self.unlabeled: list[int] = []  # lines whose example has no value for the label field
        self.judged: dict[bytes, tuple[int, Any]] = {}  # unpaired: prompt + completion -> (first line, its label)
        self.contradicted: list[tuple[int, int]] = []

    def watch(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self.add(record)
            yield record

    def add(self, record: Record) -> None:
        value = record.value
        if self.fmt == "chat" and isinstance(value, dict) and isinstance(value.get("messages"), list):
            self.turns.append(len(value["messages"]))
        self.exact.setdefault(digest(value), []).append(record.line)
        if self.fmt == "unpaired" and isinstance(value, dict):
            first, label = self.judged.setdefault(digest([value.get("prompt"), value.get("completion")]), (record.line, value.get("label")))
            if label != value.get("label"):
                self.contradicted.append((record.line, first))
        self.normalized.setdefault(digest(normalize(value)), []).append(record.line)
        if self.label_field:
            label = label_of(value, self.fmt, self.label_field)
            if label is None:
                self.unlabeled.append(record.line)
            elif self.answers is not None:
                self.answered += 1
                self.answers[label] += 1
                if len(self.answers) > LABEL_FIELD_LIMIT:
                    self.answers = None  # an identifier, not a label
            return
        answer = final_answer(value, self.fmt) if isinstance(value, dict) else None
        if answer is not None and self.answers is not None:
            self.answered += 1
            self.answers[answer] += 1
            if len(self.answers) > LABEL_SET_LIMIT:
                self.answers = None  # free text, not labels

    def report(self, name: str, display: str, stats: SplitStats) -> SplitReport:
        report = SplitReport(name, display, stats, turns=self.turns)
        report.exact_duplicates = [lines for lines in self.exact.values() if len(lines) > 1]
        report.normalized_duplicates = [lines for lines in self.normalized.values() if len(lines) > 1]
        report.label_field = self.label_field
        report.unlabeled = self.unlabeled
        report.contradicted = self.contradicted
        if self.label_field:
            report.labels = dict(self.answers.most_common()) if self.answers is not None else None
            report.too_many_labels = self.answers is None
        elif self.answers and len(self.answers) < self.answered:
            report.labels = dict(self.answers.most_common())
        return report


def data_warnings(loaded: LoadedSpec, splits: list[SplitReport], overlap: list[int], fmt: str | None = None) -> list[Diagnostic]:
    out = []
    for s in splits:
        if s.contradicted:
            pairs = [f"{line} (against {first})" for line, first in s.contradicted]
            out.append(loaded.diag(
                f"data.{'train' if s.name == 'train' else 'validation'}",
                f"{len(pairs)} {s.name} example(s) of {s.file} repeat an earlier prompt and completion with the opposite label, lines {lines_of(pairs)}",
                "KTO would push the model towards and away from the same answer: keep one label for each",
                severity="warning",
            ))
        if fmt == "unpaired" and s.label_field == "label":
            continue  # desirable against undesirable is no answer to guess: KTO's own check weighs them (methods/kto.py)
        key = f"data.{'train' if s.name == 'train' else 'validation'}"
        if s.unlabeled and (s.labels or s.too_many_labels):  # when none has a label, `validate` says so
            out.append(loaded.diag(
                "data.label_field",
                f"{len(s.unlabeled)} {s.name} example(s) of {s.file} have no {s.label_field!r} label, lines {lines_of(s.unlabeled)}",
                f"give each record a {s.label_field!r} field, or an answer that is a JSON object with that key",
                severity="warning",
            ))
        if s.too_many_labels:
            out.append(loaded.diag("data.label_field", f"{s.label_field!r} takes more than {LABEL_FIELD_LIMIT} distinct values in {s.name}: not counted as labels", "name a field with a small set of values", severity="warning"))
        if s.labels:
            top, count = next(iter(s.labels.items()))
            total = sum(s.labels.values())
            if count / total > IMBALANCE_SHARE:
                out.append(loaded.diag(
                    "data.label_field" if s.label_field else key,
                    f"heavy imbalance in {s.name}: {count} of {total} answers ({count / total:.0%}) are {top[:40]!r}",
                    "a model can score well by always giving that answer; balance the labels or weigh the rare ones",
                    severity="warning",
                ))
    if overlap and loaded.spec.data.validation is None:  # a validation file's overlap is `validate`'s warning
        out.append(loaded.diag(
            "data.validation_split",
            f"{len(overlap)} validation example(s) also appear in train (after whitespace/case normalisation), lines {lines_of(overlap)}",
            OVERLAP_HINT,
            severity="warning",
        ))
    return out


def token_errors(splits: list[SplitReport]) -> list[str]:
    out = []
    for s in splits:
        at = lambda line: f"{s.file}:{position(line, unit_of(s.file))}"  # noqa: E731
        out += [f"{at(line)}: {n} tokens, more than max_length" for line, n in s.stats.overlong]
        out += [f"{at(line)}: no token carries loss" for line in s.stats.no_loss]
        out += [f"{at(line)}: cannot be tokenized: {why}" for line, why in s.stats.failed]
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _spread(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
    return {"min": values[0], "median": statistics.median(values), "p95": p95, "max": values[-1]}


def histogram(lengths: list[int], max_length: int) -> list[dict[str, int]]:
    """Counts of example lengths in HISTOGRAM_BINS equal bins up to max_length."""
    width = max(1, -(-max_length // HISTOGRAM_BINS))
    counts = Counter(min(n // width, HISTOGRAM_BINS - 1) for n in lengths)
    return [{"from": i * width, "to": min((i + 1) * width, max_length), "examples": counts.get(i, 0)} for i in range(HISTOGRAM_BINS)]


def padding_waste(lengths: list[int], max_length: int, strategy: str) -> dict[str, float | None]:
    """Share of the sequence slots that would hold padding: padding every example to max_length, or packing."""
    tokens = sum(min(n, max_length) for n in lengths)
    packed = predict_packed_count(lengths, max_length, strategy) if lengths else 0
    return {
        "pad_to_max_length": _ratio(len(lengths) * max_length - tokens, len(lengths) * max_length),
        "packing": _ratio(packed * max_length - tokens, packed * max_length),
    }
