"""`ftc eval RUN --against CHAMPION`: the challenger (RUN) and the champion answer the same prompts, the
challenger's held-out examples, with the challenger's decoding (the locked chat template, greedy, its
evaluation.max_new_tokens), and are scored with the challenger's evaluation.metrics, as `ftc eval` scores
(runtime/evaluate/ask.py loads and asks each run's tuned model, metrics.py scores). The regression gate: no
metric gets worse than the champion's by more than evaluation.max_regression, and the headline metric rises
(by at least evaluation.min_headline_gain). The result goes to RUN/against.json; eval.json is not touched.

Refused before any model loads: the same run on both sides, a champion that did not complete, runs with
different chat templates (the prompts would differ), and a champion that trained on any of the challenger's
held-out examples (compared by content hash with the champion's training data as its lock names it), since
its scores would be flattered. Different held-out data is a warning: the challenger's set is scored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler.atomic import write_atomic
from ftc.compiler.build.lock import plan_hash
from ftc.compiler.hashing import FileHasher, sha256_bytes
from ftc.compiler.plan.model import Lock
from ftc.runtime.evaluate import metrics as m
from ftc.runtime.evaluate.ask import Decoding, Questions, Tasks, ask_models, read_questions
from ftc.runtime.evaluate.compare import schema_of
from ftc.runtime.generate import BATCH_SIZE, prompt_of, stop_token_ids
from ftc.runtime.heldout import HeldOut, _location
from ftc.runtime.models import RunFolder, load_tokenizer, locked_chat_template, open_run
from ftc.runtime.records import AgainstRecord
from ftc.runtime.runfolder import (
    AGAINST,
    AGAINST_FORMAT,
    RunFolderError,
    is_run,
    read_record,
    run_lock,
)
from ftc.templates import prepare

NO_TASKS = Tasks(None, [], {}, None, None)  # lm-eval is not run here: both sides are scored by ftc's metrics
UNGATED = ("mean_length",)  # no better direction
LOWER_IS_BETTER = ("repetition",)
EPSILON = 1e-9  # float noise in a delta compared with a threshold


class AgainstUsage(RunFolderError):
    """A comparison that makes no sense as asked (the same run twice, an unknown headline): a usage error."""


@dataclass
class Against:
    record: AgainstRecord
    path: Path
    seconds: float


def held_out_identity(lock: Lock) -> dict[str, Any]:
    """What a run's held-out examples are, as its lock names them: the validation file's hash, or the training
    file's hash with the split's share and seed."""
    data, validation = lock.inputs.data, lock.data.validation
    if "validation" in data:
        return {"source": "validation", "sha256": data["validation"].sha256}
    if validation.source == "split":
        return {"source": "split", "sha256": data["train"].sha256, "split": validation.split, "seed": validation.seed}
    return {"source": "train", "sha256": data["train"].sha256}


def _content_hash(value: Any) -> str:
    return sha256_bytes(json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def _seen_key(prompt) -> str:
    return sha256_bytes(json.dumps([prompt.text, prompt.reference], ensure_ascii=False).encode("utf-8"))


def champion_training(champion: RunFolder, tokenizer, template: str | None) -> tuple[set[str], int] | str:
    """The content hashes (record, and rendered prompt with its answer) of every example the champion trained
    on, and how many; or why they cannot be read (the data is gone or changed since its run)."""
    try:
        rel, path = _location(champion, "train")
    except RunFolderError as exc:
        return str(exc)
    if not path.is_file():
        return f"its training data {rel} is not there"
    cleaned = "data/train.jsonl" in champion.lock.artifacts  # _location checked the build's copy
    if not cleaned and FileHasher(use_cache=False).sha256(path) != champion.lock.inputs.data["train"].sha256:
        return f"its training data {rel} changed since the champion's run"
    from ftc.compiler.data.read import DataProblem, iter_records

    records = [r for r in iter_records(path, rel) if not isinstance(r, DataProblem)]
    validation = champion.lock.data.validation
    if "validation" not in champion.lock.inputs.data and validation.source == "split":
        held = set(prepare.held_out_indices(len(records), validation.split, validation.seed))
        records = [r for i, r in enumerate(records) if i not in held]
    seen = {_content_hash(r.value) for r in records}
    fmt = champion.lock.data.format
    if fmt != "text":
        for r in records:
            try:
                prompt = prompt_of(r.value, fmt, tokenizer, template)
            except Exception:  # a record the template cannot render: its content hash still counts
                prompt = None
            if prompt is not None:
                seen.add(_seen_key(prompt))
    return seen, len(records)


def leak_check(champion: RunFolder, examples: HeldOut, questions: Questions, tokenizer, template) -> dict[str, Any]:
    """Which of the challenger's held-out examples the champion trained on."""
    found = champion_training(champion, tokenizer, template)
    if isinstance(found, str):
        return {"status": "not checked", "reason": found, "overlapping": []}
    seen, count = found
    prompts = dict(questions.prompts)
    overlapping = [
        f"{examples.path}:{r.where}"
        for r in examples.records
        if _content_hash(r.value) in seen or (
            (p := prompts.get(f"{examples.path}:{r.where}")) is not None and _seen_key(p) in seen
        )
    ]
    return {"status": "checked", "champion_train_examples": count, "overlapping": overlapping}


def _render(examples: HeldOut, fmt: str, tokenizer, template: str | None) -> list[tuple[str, Any]]:
    """The held-out examples as prompts rendered with `tokenizer` (the champion's: its special tokens)."""
    rendered = []
    for item in examples.records:
        prompt = prompt_of(item.value, fmt, tokenizer, template)
        if prompt is not None:
            rendered.append((f"{examples.path}:{item.where}", prompt))
    return rendered


def _metric_row(name: str, champion, challenger, max_regression: float) -> dict[str, Any]:
    better = None if name in UNGATED else "lower" if name in LOWER_IS_BETTER else "higher"
    a, b = champion.value, challenger.value
    delta = None if a is None or b is None else b - a
    gain = None if delta is None or better is None else (delta if better == "higher" else -delta)
    notes = {side: s.note for side, s in (("champion", champion), ("challenger", challenger)) if s.note}
    note = (
        None if not notes
        else next(iter(notes.values())) if len(set(notes.values())) == 1 and len(notes) == 2
        else "; ".join(f"{side}: {n}" for side, n in notes.items())
    )
    return {
        "champion": a,
        "challenger": b,
        "delta": delta,
        "better": better,
        "regressed": gain is not None and -gain > max_regression + EPSILON,
        "note": note,
    }


def gate(rows: dict[str, dict[str, Any]], headline: str, max_regression: float, min_gain: float) -> list[str]:
    """Why the challenger fails the regression gate; empty when it passes."""
    failures = []
    for name, row in rows.items():
        if row["regressed"]:
            failures.append(
                f"{name} got worse by {abs(row['delta']):.4f} ({row['champion']:.4f} -> {row['challenger']:.4f}), "
                f"more than max_regression {max_regression:g}"
            )
    row = rows.get(headline)
    if row is None or row["delta"] is None:
        why = (row or {}).get("note") or "it was not computed"
        failures.append(f"the headline metric {headline} cannot be compared: {why}")
    else:
        gain = row["delta"] if row["better"] == "higher" else -row["delta"]
        if gain <= EPSILON:
            failures.append(f"the headline metric {headline} did not improve ({row['champion']:.4f} -> {row['challenger']:.4f})")
        elif gain + EPSILON < min_gain:
            failures.append(f"the headline metric {headline} rose by {gain:.4f}, less than min_headline_gain {min_gain:g}")
    return failures


def headline_of(lock: Lock, headline: str | None) -> str:
    """The headline metric: the one asked for, else the plan's; refused when it is not measured or has no
    better direction."""
    ev = lock.evaluation
    name = headline or ev.headline_metric()
    measured = set(ev.metrics) | ({"distinct_1", "repetition"} if "distinct_n" in ev.metrics else set())
    if name is None or name in UNGATED or name not in measured:
        allowed = ", ".join(sorted(measured - set(UNGATED))) or "none"
        raise AgainstUsage(f"headline {name!r} is not a measured metric with a better direction (measured: {allowed})")
    return name


def check_pair(run_dir: Path, champion_dir: Path) -> list[str]:
    """Refuse what cannot be compared (before any model loads); the warnings for what may be."""
    if run_dir.resolve() == champion_dir.resolve():
        raise AgainstUsage(f"{champion_dir} is the run itself: give another run as the champion")
    if not is_run(champion_dir):
        raise RunFolderError(f"the champion {champion_dir} is not a run folder (runs are made by `ftc run`)")
    mine, theirs = read_record(run_dir), read_record(champion_dir)
    if mine.run_id and mine.run_id == theirs.run_id and mine.plan_sha256 == theirs.plan_sha256:
        raise AgainstUsage(f"{champion_dir} is a copy of the run itself (run id {mine.run_id}): give another run")
    if theirs.status != "completed":
        raise RunFolderError(
            f"the champion {champion_dir} is not a completed run (status {theirs.status or 'unknown'}); "
            "compare against a run that finished"
        )
    a, b = run_lock(run_dir), run_lock(champion_dir)
    if not (a.method.generates and b.method.generates):
        raise RunFolderError("a reward model answers nothing: --against compares runs that generate answers")
    if a.inputs.chat_template.sha256 != b.inputs.chat_template.sha256:
        raise RunFolderError(
            f"the runs use different chat templates (this run: {a.inputs.chat_template.source}, sha256 "
            f"{a.inputs.chat_template.sha256[:12]}; the champion: {b.inputs.chat_template.source}, sha256 "
            f"{b.inputs.chat_template.sha256[:12]}): they would be asked different prompts, so their scores "
            "do not compare"
        )
    warnings = []
    ours, champ = held_out_identity(a), held_out_identity(b)
    differs = [k for k in sorted(set(ours) | set(champ)) if ours.get(k) != champ.get(k)]
    if differs:
        warnings.append(
            f"the runs hold out different data ({', '.join(differs)} differ: this run {ours}, the champion {champ}); "
            "both are scored on this run's held-out examples"
        )
    return warnings


def compare_against(
    run_dir: Path,
    champion_dir: Path,
    max_examples: int | None = None,
    max_regression: float | None = None,
    headline: str | None = None,
    min_gain: float | None = None,
    step: Callable[[str], None] = lambda _: None,
) -> Against:
    """Score the challenger and the champion on the challenger's held-out examples; check the gate; write
    RUN/against.json."""
    started = time.monotonic()
    warnings = check_pair(run_dir, champion_dir)
    challenger, champion = open_run(run_dir), open_run(champion_dir)
    ev = challenger.lock.evaluation
    name = headline_of(challenger.lock, headline)
    max_regression = ev.max_regression if max_regression is None else max_regression
    min_gain = ev.min_headline_gain if min_gain is None else min_gain
    limit = max_examples if max_examples is not None else ev.max_examples

    step("reading held-out examples")
    tokenizer = load_tokenizer(challenger)
    template, _ = locked_chat_template(challenger)
    questions = read_questions(challenger, tokenizer, template, limit)
    if not questions.prompts:
        raise RunFolderError(f"{questions.examples.path} has no held-out example with a prompt and an answer to compare on")
    step("checking the champion's training data")
    leak = leak_check(champion, questions.examples, questions, tokenizer, template)
    if leak["overlapping"]:
        shown = ", ".join(leak["overlapping"][:5]) + (" ..." if len(leak["overlapping"]) > 5 else "")
        raise RunFolderError(
            f"the champion {champion_dir} trained on {len(leak['overlapping'])} of this run's "
            f"{len(questions.examples.records)} held-out examples ({shown}): its scores on them would be flattered, "
            "so the comparison is refused; hold out examples neither run trained on"
        )
    if leak["status"] != "checked":
        warnings.append(f"not checked whether the champion trained on these held-out examples: {leak['reason']}")

    champ_tokenizer = load_tokenizer(champion)
    champ_template, _ = locked_chat_template(champion)
    champ_questions = Questions(questions.examples, _render(questions.examples, challenger.lock.data.format, champ_tokenizer, champ_template), questions.refs)
    if [s for s, _ in champ_questions.prompts] != [s for s, _ in questions.prompts]:
        raise RunFolderError("the champion's tokenizer renders a different set of these prompts; the runs do not compare")
    stops = stop_token_ids(tokenizer, template)
    decoding = Decoding(tokenizer, stops, [tokenizer.decode([i]) for i in stops], ev.max_new_tokens)
    champ_stops = stop_token_ids(champ_tokenizer, champ_template)
    champ_decoding = Decoding(champ_tokenizer, champ_stops, [champ_tokenizer.decode([i]) for i in champ_stops], ev.max_new_tokens)
    timings: dict[str, float] = {"prepare": time.monotonic() - started}

    def named(side: str) -> Callable[[str], None]:  # ask_models' steps name its sides base and tuned
        return lambda text: step(f"{side}: loading its base" if text.startswith("base:") else text.replace("tuned", side, 1))

    answers = {}
    for side, run, q, dec in (("challenger", challenger, questions, decoding), ("champion", champion, champ_questions, champ_decoding)):
        mark = time.monotonic()
        answers[side] = ask_models(run, q, dec, NO_TASKS, False, None, named(side), {})["tuned"].answers
        timings[side] = time.monotonic() - mark

    step("scoring")
    validator, _, schema_note = schema_of(challenger, ev)
    label_field = challenger.lock.data.label_field
    scores = {
        side: m.compute(ev.metrics, [a.text for a in answers[side]], [a.tokens for a in answers[side]], questions.refs,
                        label_field=label_field, validator=validator)
        for side in answers
    }
    if schema_note and "json_schema" in ev.metrics:
        for side_scores in scores.values():
            side_scores["json_schema"] = m.Score(None, schema_note)
    rows = {key: _metric_row(key, scores["champion"][key], scores["challenger"][key], max_regression) for key in scores["challenger"]}
    failures = gate(rows, name, max_regression, min_gain)
    for key, row in rows.items():
        if row["delta"] is None and row["better"] is not None and key != name:
            warnings.append(f"{key} is not gated: {row['note'] or 'a side has no number'}")
    theirs = read_record(champion_dir)
    timings["total"] = time.monotonic() - started
    record = AgainstRecord.model_validate({
        "format_version": AGAINST_FORMAT,
        "run": read_record(run_dir).run_id or run_dir.name,
        "plan_hash": read_record(run_dir).plan_sha256 or plan_hash(challenger.lock),
        "champion": {
            "run": theirs.run_id or champion_dir.name,
            "project": champion.name,
            "path": str(champion_dir),
            "plan_hash": theirs.plan_sha256 or plan_hash(champion.lock),
        },
        "examples": len(questions.prompts),
        "held_out": {"source": questions.examples.source, "path": questions.examples.path, "max_examples": limit},
        "held_out_data": {"challenger": held_out_identity(challenger.lock), "champion": held_out_identity(champion.lock)},
        "leak_check": leak,
        "decoding": {
            "do_sample": False, "max_new_tokens": ev.max_new_tokens, "stop_token_ids": stops,
            "stop_strings": decoding.stop_strings, "chat_template_sha256": challenger.lock.inputs.chat_template.sha256,
            "batch_size": BATCH_SIZE, "padding_side": "left",
        },
        "metrics": rows,
        "verdict": {"passed": not failures, "headline": name, "max_regression": max_regression, "min_headline_gain": min_gain, "failures": failures},
        "warnings": warnings,
        "versions": m.versions(),
        "answers": [
            {
                "source": source, "prompt": prompt.shown, "reference": prompt.reference,
                "champion": answers["champion"][i].text, "challenger": answers["challenger"][i].text,
                "champion_tokens": answers["champion"][i].tokens, "challenger_tokens": answers["challenger"][i].tokens,
            }
            for i, (source, prompt) in enumerate(questions.prompts)
        ],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    })
    path = run_dir / AGAINST
    write_atomic(path, json.dumps(record.to_json(), indent=2, ensure_ascii=False) + "\n")
    return Against(record, path, timings["total"])


def read_against(run_dir: Path) -> AgainstRecord | None:
    """RUN/against.json; None when there is none. Raises RunFolderError when it is unreadable."""
    path = run_dir / AGAINST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format_version") != AGAINST_FORMAT:
            raise ValueError(f"format_version {data.get('format_version') if isinstance(data, dict) else None!r}")
        return AgainstRecord.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise RunFolderError(f"{path} is not readable ({str(exc).splitlines()[0]}); run `ftc eval RUN --against CHAMPION` again") from None


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_against(console, result: Against) -> None:
    """The two runs side by side, the gate's verdict and why."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    r = result.record
    console.print(
        f"{r.examples} held-out example(s) from {r.held_out.path} ({r.held_out.source}), greedy, "
        f"max_new_tokens {r.decoding.max_new_tokens}; champion {r.champion.run} ({r.champion.path})",
        markup=False,
    )
    table = Table(box=box.SIMPLE_HEAD)
    for col, justify in (("metric", "left"), ("champion", "right"), ("challenger", "right"), ("delta", "right"), ("gate", "left"), ("note", "left")):
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col != "note")  # numbers and names stay whole
    v = r.verdict
    for key, row in r.metrics.items():
        if row["better"] is None:
            mark = Text("not gated", style="dim")
        elif row["regressed"]:
            mark = Text(f"✗ worse by > {v.max_regression:g}", style="red")
        elif key == v.headline:
            gained = row["delta"] is not None and (row["delta"] if row["better"] == "higher" else -row["delta"]) > EPSILON
            mark = Text("headline " + ("✓" if gained and not any(v.headline in f for f in v.failures) else "✗"), style="bold")
        else:
            mark = Text("✓", style="green")
        delta = "-" if row["delta"] is None else f"{row['delta']:+.4f}"
        table.add_row(key, _num(row["champion"]), _num(row["challenger"]), delta, mark, Text(row["note"] or "", style="dim"))
    console.print(table)
    for warning in r.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    if v.passed:
        console.print(Text("✓ the challenger passes the regression gate against the champion", style="green bold"))
    for failure in v.failures:
        console.print(Text("✗ ", style="red bold") + Text(failure))
