"""Answer metrics for `ftc eval`: each compares one model's greedy answers with the held-out references.

Every metric is a float in [0, 1] (mean_length: tokens), or None with a note saying why it does not apply;
a metric that cannot be measured is never given a number. The definitions:
  exact_match   share of answers equal to the reference after stripping surrounding whitespace.
  accuracy      share of answers whose label equals the reference's label. The label is the lock's
                data.label_field (a field of the record, or a key of the JSON answer, as `ftc data check`
                reads it); without one, the whole stripped answer when the references take at most
                LABEL_LIMIT distinct values and some repeat. Otherwise the answers are not labels: not
                applicable, with the reason.
  rouge_l       mean ROUGE-L F-measure (rouge-score, no stemming; its tokenizer lowercases and keeps a-z0-9).
  bleu, chrf    sacrebleu's corpus BLEU and chrF, divided by 100 so that every score is on one 0-1 scale.
  json_valid    share of answers that parse as JSON (after stripping whitespace).
  json_schema   share that parse and validate against the spec's JSON Schema (jsonschema, its declared draft).
  distinct_n    distinct-2: unique word bigrams / all word bigrams, pooled over every answer (Li et al. 2016);
                distinct_1 is listed with it. Low values mean the model says the same things to every prompt.
  repetition    mean share of each answer's word 4-grams that repeat an earlier 4-gram of the same answer
                (seq-rep-4, Welleck et al. 2019): degenerate loops. Listed with distinct_n.
  mean_length   mean answer length in tokens of the run's tokenizer, up to the stop token.
Words for distinct-n and repetition are whitespace-separated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

LABEL_LIMIT = 20  # references with at most this many distinct answers are labels (as `ftc data check` counts them)
REPETITION_N = 4


@dataclass(frozen=True)
class Score:
    value: float | None
    note: str | None = None


@dataclass(frozen=True)
class Example:
    """One held-out example as the metrics see it: the reference answer, and its label when it has one."""

    reference: str
    label: str | None = None  # from data.label_field; None when the lock names none or the record has none


def exact_match(answers: Sequence[str], refs: Sequence[Example]) -> Score:
    return Score(_mean(a.strip() == r.reference.strip() for a, r in zip(answers, refs, strict=True)))


def label_of_answer(answer: str, field: str) -> str | None:
    """The label a model's answer gives: that key of the answer when the answer is a JSON object."""
    try:
        parsed = json.loads(answer.strip())
    except ValueError:
        return None
    label = parsed.get(field) if isinstance(parsed, dict) else None
    if label is None:
        return None
    return label if isinstance(label, str) else json.dumps(label, sort_keys=True)


def accuracy(answers: Sequence[str], refs: Sequence[Example], label_field: str | None) -> Score:
    if label_field:
        labeled = [(a, r) for a, r in zip(answers, refs, strict=True) if r.label is not None]
        if not labeled:
            return Score(None, f"no held-out example has a {label_field!r} label")
        # The answer shows the label when the reference holds it as a JSON key or is the label itself.
        if not any(label_of_answer(r.reference, label_field) is not None or r.reference.strip() == r.label for _, r in labeled):
            return Score(
                None,
                f"{label_field!r} is a field of the records, and the answers neither hold it as a JSON key nor are "
                "it: an answer gives no label to compare",
            )
        hits = []
        for answer, ref in labeled:
            label = label_of_answer(answer, label_field)
            if label is None and ref.reference.strip() == ref.label:
                label = answer.strip()
            hits.append(label == ref.label)
        skipped = len(refs) - len(labeled)
        note = f"{label_field!r} of the answer; an answer without one counts as wrong"
        return Score(_mean(hits), note + (f"; {skipped} example(s) without a label left out" if skipped else ""))
    distinct = {r.reference.strip() for r in refs}
    if len(distinct) > LABEL_LIMIT or len(distinct) == len(refs):
        why = f"more than {LABEL_LIMIT}" if len(distinct) > LABEL_LIMIT else "none repeats"
        return Score(
            None,
            f"the {len(refs)} references take {len(distinct)} distinct values ({why}), so they are not labels; "
            "set data.label_field to score one field of the answers",
        )
    return Score(
        _mean(a.strip() == r.reference.strip() for a, r in zip(answers, refs, strict=True)),
        f"whole answers as labels ({len(distinct)} distinct references)",
    )


def rouge_l(answers: Sequence[str], refs: Sequence[Example]) -> Score:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return Score(
        _mean(scorer.score(r.reference, a)["rougeL"].fmeasure for a, r in zip(answers, refs, strict=True)),
        "mean F-measure",
    )


def bleu(answers: Sequence[str], refs: Sequence[Example]) -> Score:
    from sacrebleu.metrics import BLEU

    metric = BLEU()
    score = metric.corpus_score(list(answers), [[r.reference for r in refs]])
    return Score(score.score / 100, f"corpus BLEU / 100; {metric.get_signature()}")


def chrf(answers: Sequence[str], refs: Sequence[Example]) -> Score:
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    score = metric.corpus_score(list(answers), [[r.reference for r in refs]])
    return Score(score.score / 100, f"corpus chrF / 100; {metric.get_signature()}")


def parses_as_json(text: str) -> bool:
    try:
        json.loads(text.strip())
    except ValueError:
        return False
    return True


def json_valid(answers: Sequence[str]) -> Score:
    return Score(_mean(parses_as_json(a) for a in answers))


def schema_validator(schema: dict[str, Any]):
    """A validator of the schema's declared draft (the newest when it declares none); raises on a bad schema."""
    from jsonschema.validators import validator_for

    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def json_schema(answers: Sequence[str], validator) -> Score:
    def valid(text: str) -> bool:
        try:
            value = json.loads(text.strip())
        except ValueError:
            return False
        return validator.is_valid(value)

    return Score(_mean(valid(a) for a in answers))


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct(answers: Sequence[str], n: int) -> Score:
    grams = [g for a in answers for g in ngrams(a.split(), n)]
    if not grams:
        return Score(None, "every answer is blank" if n == 1 else f"no answer has {n} words or more")
    return Score(len(set(grams)) / len(grams), f"distinct-{n} over all answers")


def repetition(answers: Sequence[str], n: int = REPETITION_N) -> Score:
    rates = []
    for answer in answers:
        grams = ngrams(answer.split(), n)
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    if not rates:
        return Score(None, f"no answer has {n} words or more")
    return Score(sum(rates) / len(rates), f"seq-rep-{n}, over the {len(rates)} answer(s) of {n}+ words")


def mean_length(lengths: Sequence[int]) -> Score:
    return Score(_mean(lengths), "tokens per answer")


def _mean(values) -> float | None:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else None


def versions() -> dict[str, str | None]:
    """The packages whose definitions the scores depend on, plus sacrebleu's signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    found: dict[str, str | None] = {}
    for name in ("rouge-score", "sacrebleu", "jsonschema", "lm-eval"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    for name, metric in (("bleu_signature", BLEU()), ("chrf_signature", CHRF())):
        metric.corpus_score(["a"], [["a"]])  # a signature names the reference count: one, as ftc scores
        found[name] = str(metric.get_signature())
    return found


def compute(
    names: Sequence[str],
    answers: Sequence[str],
    lengths: Sequence[int],
    refs: Sequence[Example],
    *,
    label_field: str | None = None,
    validator=None,
) -> dict[str, Score]:
    """The named metrics for one model's answers. distinct_n brings distinct_1 and repetition along."""
    scores: dict[str, Score] = {}
    if not refs:
        return {name: Score(None, "no held-out example with a prompt and an answer") for name in names}
    for name in names:
        if name == "exact_match":
            scores[name] = exact_match(answers, refs)
        elif name == "accuracy":
            scores[name] = accuracy(answers, refs, label_field)
        elif name == "rouge_l":
            scores[name] = rouge_l(answers, refs)
        elif name == "bleu":
            scores[name] = bleu(answers, refs)
        elif name == "chrf":
            scores[name] = chrf(answers, refs)
        elif name == "json_valid":
            scores[name] = json_valid(answers)
        elif name == "json_schema":
            scores[name] = (
                json_schema(answers, validator) if validator is not None else Score(None, "no evaluation.json_schema")
            )
        elif name == "distinct_n":
            scores[name] = distinct(answers, 2)
            scores["distinct_1"] = distinct(answers, 1)
            scores["repetition"] = repetition(answers)
        elif name == "mean_length":
            scores[name] = mean_length(lengths)
        else:
            raise ValueError(f"unknown metric {name!r}")
    return scores
