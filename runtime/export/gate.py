"""The parity gate every export passes before `ftc export` keeps it: the exported model against merged/.

merged/ is the reference: `ftc merge` proved it reproduces the trained model. On the first N held-out examples
(the lock's export.examples) both models are asked the same things:
  - logits: each example, tokenized as the run tokenized it, goes through both; over every position we measure
    max and mean |dlogit| and the share of positions whose top-1 token agrees (gated: export.gates.*.min_top1);
  - answers: greedy, with the locked chat template and stop tokens, up to evaluation.max_new_tokens, scored with
    the metrics the lock's [evaluation] lists, exactly as `ftc eval` scores them; every metric that is a share
    of the examples (GATED_METRICS) may fall below merged/'s by at most max_metric_drop;
  - the file: its size (gated when max_size_mib is set), and what it carries: the locked chat template
    byte-for-byte, a tokenizer that encodes every held-out prompt to the run's token ids, and the run's stop ids.

The export is loaded as a user's tool would read it: a GGUF file through transformers' GGUF loader (which
dequantizes it), a compressed-tensors folder through transformers' compressed-tensors support. Both give the
weights exactly as stored; runtime/export/compressed.py says how W8A8's activation quantization is treated.

Measured on the quickstart (bench/export.py, SmolLM2-135M, 60 held-out tickets, 2-core CPU): the README's
"Exporting" table, from which the default thresholds in compiler/spec/export.py were set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ftc.runtime.evaluate import metrics as m
from ftc.runtime.evaluate.ask import Questions, read_questions
from ftc.runtime.generate import Answer, answers_of, prompt_ids, stop_token_ids
from ftc.runtime.merge import compare_logits, logits_of, verification_inputs
from ftc.runtime.models import RunFolder

# the metrics that are a share of the examples, higher being better: what max_metric_drop applies to
GATED_METRICS = ("exact_match", "accuracy", "rouge_l", "bleu", "chrf", "json_valid", "json_schema")


@dataclass
class Reference:
    """merged/'s side of every comparison, computed once for all the formats of one `ftc export`."""

    tokenizer: Any
    chat_template: str | None
    stop_ids: list[int]
    inputs: list[list[int]]  # teacher-forced token ids of the held-out examples
    logits: list[Any]
    questions: Questions
    answers: list[Answer]
    metrics: dict[str, float | None]
    validator: Any = None
    max_new_tokens: int = 256


@dataclass
class Measured:
    """One export against the reference."""

    top1_agreement: float
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    max_abs_logit: float
    positions: int
    metrics: dict[str, float | None]
    answers_identical: int
    answers: list[Answer]
    carried: dict[str, Any] = field(default_factory=dict)  # template, tokenizer, stop ids: what the file carries
    problems: list[str] = field(default_factory=list)  # what the file lacks (each one fails the gate)
    llama_cpp: dict[str, Any] | None = None  # a GGUF read by llama.cpp itself, when llama-cpp-python is installed


def score_answers(run: RunFolder, reference_questions: Questions, answers: list[Answer], validator) -> dict[str, float | None]:
    """The lock's evaluation metrics for these answers, as `ftc eval` computes them."""
    names = list(run.lock.evaluation.metrics)
    scores = m.compute(
        names,
        [a.text for a in answers],
        [a.tokens for a in answers],
        reference_questions.refs,
        label_field=run.lock.data.label_field,
        validator=validator,
    )
    return {name: score.value for name, score in scores.items()}


def reference_of(run: RunFolder, merged, tokenizer, chat_template: str | None, examples: int, validator, step: Callable[[str], None]) -> Reference:
    """merged/'s logits, answers and scores on the first `examples` held-out examples."""
    inputs = verification_inputs(run, tokenizer, chat_template, examples)
    step(f"merged/: logits on {len(inputs)} held-out examples")
    logits = logits_of(merged, inputs)
    questions = read_questions(run, tokenizer, chat_template, examples)
    stop_ids = stop_token_ids(tokenizer, chat_template)
    max_new = run.lock.evaluation.max_new_tokens
    answers = _answers(merged, tokenizer, questions, stop_ids, max_new, step, "merged/")
    metrics = score_answers(run, questions, answers, validator)
    return Reference(tokenizer, chat_template, stop_ids, inputs, logits, questions, answers, metrics, validator, max_new)


def _answers(model, tokenizer, questions: Questions, stop_ids, max_new: int, step, name: str) -> list[Answer]:
    texts = questions.texts

    def done(n: int) -> None:
        step(f"{name}: {n}/{len(texts)} answers")

    done(0)
    return answers_of(model, tokenizer, texts, stop_ids, max_new, False, done) if texts else []


def measure(run: RunFolder, ref: Reference, model, step: Callable[[str], None], name: str) -> Measured:
    """The export's logits and answers against merged/'s."""
    step(f"{name}: logits on {len(ref.inputs)} held-out examples")
    v = compare_logits(ref.logits, logits_of(model, ref.inputs), "float32")
    answers = _answers(model, ref.tokenizer, ref.questions, ref.stop_ids, ref.max_new_tokens, step, name)
    metrics = score_answers(run, ref.questions, answers, ref.validator)
    identical = sum(a.text == b.text for a, b in zip(answers, ref.answers, strict=True))
    return Measured(
        v.top1_agreement, v.max_abs_logit_diff, v.mean_abs_logit_diff, v.max_abs_logit, v.positions,
        metrics, identical, answers,
    )


def check_carried(measured: Measured, ref: Reference, template: str | None, tokenizer, stop_ids: list[int] | None) -> None:
    """What the exported file carries must be what the run trained with: the chat template byte-for-byte, a
    tokenizer that gives the same ids for every held-out prompt, and the stop tokens."""
    carried: dict[str, Any] = {}
    if ref.chat_template is not None:
        same = template == ref.chat_template
        carried["chat_template"] = "the locked one" if same else "differs from the locked one" if template else "missing"
        if not same:
            measured.problems.append(f"the chat template it carries {carried['chat_template'].replace('the locked one', '')}".strip())
    if tokenizer is not None:
        texts = ref.questions.texts
        mismatched = [i for i, text in enumerate(texts) if prompt_ids(tokenizer, text) != prompt_ids(ref.tokenizer, text)]
        carried["tokenizer"] = f"{len(texts) - len(mismatched)}/{len(texts)} prompts tokenized as the run tokenizes them"
        if mismatched:
            measured.problems.append(f"its tokenizer encodes {len(mismatched)} of {len(texts)} held-out prompts differently from the run's (first: example {mismatched[0] + 1})")
    if stop_ids is not None:
        missing = sorted(set(ref.stop_ids) - set(stop_ids))
        carried["stop_token_ids"] = sorted(stop_ids)
        if missing:
            measured.problems.append(f"it does not stop at token(s) {missing}, which end the run's answers")
    measured.carried = carried


def check_llama_cpp(measured: Measured, ref: Reference, path) -> None:
    """Read a GGUF with llama.cpp (runtime/export/llamacpp.py): its logits against merged/'s, and its tokens for
    every held-out prompt against the run's. judge() holds its top-1 to the same threshold."""
    from ftc.runtime.export import llamacpp

    logits, tokens = llamacpp.read(path, ref.inputs, ref.questions.texts)
    v = compare_logits(ref.logits, logits, "float32")
    same = sum(got == prompt_ids(ref.tokenizer, text) for got, text in zip(tokens, ref.questions.texts, strict=True))
    measured.llama_cpp = {
        "version": llamacpp.version(),
        "top1_agreement": v.top1_agreement,
        "max_abs_logit_diff": v.max_abs_logit_diff,
        "mean_abs_logit_diff": v.mean_abs_logit_diff,
        "tokenizer": f"{same}/{len(tokens)} prompts tokenized as the run tokenizes them",
    }
    if same < len(tokens):
        measured.problems.append(f"llama.cpp tokenizes {len(tokens) - same} of {len(tokens)} held-out prompts differently from the run")


def judge(measured: Measured, ref: Reference, gate, size_bytes: int) -> tuple[dict[str, Any], list[str]]:
    """The gate's record (thresholds and measurements) and the reasons it fails, if any."""
    failures = list(measured.problems)
    if measured.top1_agreement < gate.min_top1:
        failures.append(f"top-1 agreement with merged/ is {measured.top1_agreement:.1%}, below {gate.min_top1:.0%}")
    if measured.llama_cpp is not None and measured.llama_cpp["top1_agreement"] < gate.min_top1:
        failures.append(f"read by llama.cpp, top-1 agreement with merged/ is {measured.llama_cpp['top1_agreement']:.1%}, below {gate.min_top1:.0%}")
    drops = {}
    for name in GATED_METRICS:
        if name not in measured.metrics:
            continue
        before, after = ref.metrics.get(name), measured.metrics[name]
        if before is None or after is None:
            continue
        drops[name] = before - after
        if before - after > gate.max_metric_drop + 1e-12:
            failures.append(f"{name} falls from {before:.3f} (merged/) to {after:.3f}, more than {gate.max_metric_drop:g}")
    size_mib = size_bytes / 2**20
    if gate.max_size_mib is not None and size_mib > gate.max_size_mib:
        failures.append(f"it is {size_mib:.1f} MiB, above max_size_mib {gate.max_size_mib:g}")
    n = len(ref.answers)
    record = {
        "thresholds": {"min_top1": gate.min_top1, "max_metric_drop": gate.max_metric_drop, "max_size_mib": gate.max_size_mib},
        "examples": len(ref.inputs),
        "positions": measured.positions,
        "top1_agreement": measured.top1_agreement,
        "max_abs_logit_diff": measured.max_abs_logit_diff,
        "mean_abs_logit_diff": measured.mean_abs_logit_diff,
        "max_abs_logit": measured.max_abs_logit,
        "metrics": {name: {"merged": ref.metrics.get(name), "export": value} for name, value in measured.metrics.items()},
        "metric_drops": drops,
        "answers_identical": f"{measured.answers_identical}/{n}",
        "size_mib": round(size_mib, 2),
        "carries": measured.carried,
        **({"llama_cpp": measured.llama_cpp} if measured.llama_cpp is not None else {}),
    }
    return record, failures
