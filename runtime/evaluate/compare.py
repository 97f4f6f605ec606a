"""`ftc eval RUN`: score the base and the tuned model side by side on the run's held-out examples, check the
spec's gates, name what went wrong, and keep everything in RUN/eval.json.

Both models answer the same prompts: each held-out example up to its answer, rendered with the locked chat
template and its generation prompt (runtime/generate.py prompt_of), decoded greedily in left-padded batches,
stopping at the EOS or the template's end-of-turn token, or after evaluation.max_new_tokens. The base is the
weights the run trained against; the tuned model is the base with final/'s adapter merged in memory (what
`ftc merge` writes and verifies), or final/ itself for full fine-tuning. The answers are scored with the
metrics the lock's [evaluation] lists (runtime/evaluate/metrics.py), the lm-eval harness scores the same held-out task
and any general tasks (runtime/evaluate/lmeval.py), the gates are checked, and runtime/evaluate/diagnose.py reads the loss
curves and the scores.

eval.json (format_version 1) is written atomically; its shape is documented in README.md ("Evaluating a run").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.build.lock import plan_hash
from ftc.compiler.hashing import sha256_bytes
from ftc.compiler.spec.gates import parse_gate
from ftc.runtime.evaluate import baselines as bl
from ftc.runtime.evaluate import lmeval
from ftc.runtime.evaluate import metrics as m
from ftc.runtime.evaluate.ask import (
    Decoding,
    FewShot,
    Questions,
    Side,
    Tasks,
    ask_models,
    prepare_tasks,
    read_questions,
)
from ftc.runtime.evaluate.diagnose import Answers, diagnose
from ftc.runtime.evaluate.endpoint import Endpoint
from ftc.runtime.evaluate.fewshot import choose_examples
from ftc.runtime.evaluate.scores import (
    check_gates,
    gate_scores,
    lm_eval_record,
    metric_rows,
)
from ftc.runtime.generate import BATCH_SIZE, stop_token_ids
from ftc.runtime.models import RunFolder, load_tokenizer, locked_chat_template, open_run
from ftc.runtime.runfolder import (
    EVAL,
    EVAL_ENDPOINT,  # `ftc eval --endpoint`: the tuned side as served; eval.json stays as it was
    EVAL_FORMAT,
    EvalRecord,
    RunFolderError,
    newest_run,
    read_evaluation,
    read_events,
    read_record,
    write_evaluation,
)


@dataclass
class Evaluation:
    """What `ftc eval` measured: the eval.json record, and whether every gate held."""

    record: EvalRecord
    path: Path
    gates_hold: bool
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def resolve_run(target: Path, root: Path | None = None) -> Path:
    """A run folder as it is; a spec (.toml) means its newest completed run under <root>/runs/<name>/, root
    being the working folder, as `ftc run SPEC` places runs."""
    if target.is_dir():
        return target
    return newest_run(target, root)


def schema_of(run: RunFolder, ev: dict[str, Any]) -> tuple[Any, dict[str, Any] | None, str | None]:
    """The JSON Schema validator, its record (path, sha256), and why there is none."""
    if not ev.json_schema:
        return None, None, "no evaluation.json_schema"
    spec_dir = (run.root / run.lock.inputs.spec.path).parent
    path = spec_dir / ev.json_schema
    if not path.is_file():
        return None, None, f"the JSON Schema {path} is missing"
    data = path.read_bytes()
    info = {"path": str(path.relative_to(run.root) if path.is_relative_to(run.root) else path), "sha256": sha256_bytes(data)}
    try:
        return m.schema_validator(json.loads(data)), info, None
    except Exception as exc:  # noqa: BLE001 - invalid JSON or an invalid schema: both mean "cannot score"
        return None, info, f"the JSON Schema {path} is not usable: {str(exc).splitlines()[0][:200]}"


@dataclass(frozen=True)
class Scores:
    """The answers scored: eval.json's metrics, lm_eval and gates."""

    answer_texts: dict[str, list[str] | None]  # None: that side was not evaluated; []: nothing to ask it
    ref_lengths: list[int]
    metrics: dict[str, dict[str, Any]]
    lm_eval: dict[str, dict[str, Any]]
    gates: list[dict[str, Any]]


def score(
    run: RunFolder, ev: dict[str, Any], questions: Questions, sides: dict[str, Side | None], tasks: Tasks, tokenizer, schema,
    compare_base: bool | None = None,
) -> Scores:
    """The metrics the lock lists, lm-eval's results, and the gates checked on both (a gate without a number
    says why)."""
    validator, _, schema_note = schema
    compare_base = ev.compare_base if compare_base is None else compare_base
    # None: that model was not evaluated (compare_base = false); []: there was nothing to ask it
    answer_texts = {
        side: [a.text for a in s.answers] if s else (None if side == "base" and not compare_base else [])
        for side, s in sides.items()
    }
    lengths = {side: ([a.tokens for a in s.answers] if s else []) for side, s in sides.items()}
    refs = questions.refs
    ref_lengths = [len(tokenizer(r.reference, add_special_tokens=False)["input_ids"]) for r in refs]
    label_field = run.lock.data.label_field
    rows = metric_rows(ev.metrics, answer_texts, lengths, refs, label_field, validator, schema_note, ref_lengths)
    lm_results = lm_eval_record(sides, tasks.general, tasks.unavailable, tasks.heldout, answer_texts, run.lock.data.format)
    scores = gate_scores(rows, lm_results)
    why = {name: row["note"] for name, row in rows.items() if row["note"]}
    why |= {name: r["reason"] for name, r in lm_results.items() if r.get("reason")}
    if not compare_base:
        why |= {f"{side}.{name}": "compare_base = false: the base model was not evaluated" for name in scores["base"] for side in ("base", "zero_shot")}
    if "few_shot" not in sides:
        why |= {f"few_shot.{name}": "the few_shot baseline was not evaluated (evaluation.baselines, or --baselines few_shot)" for name in scores["tuned"]}
    why |= {f"few_shot.{name}": "lm-eval tasks are not run with few-shot prompts" for name in lm_results}
    gates = check_gates(list(ev.gates or []), scores, why)
    return Scores(answer_texts, ref_lengths, rows, lm_results, gates)


def _diagnosis(run_dir: Path, run: RunFolder, questions: Questions, sides, scores: Scores, max_new_tokens: int):
    """What the loss curves and the scores say went wrong (runtime/evaluate/diagnose.py)."""
    tuned_answers = sides["tuned"].answers if sides["tuned"] else []
    return diagnose(
        read_events(run_dir),
        run.lock.method.kind,
        Answers(
            references=[r.reference for r in questions.refs],
            base=scores.answer_texts["base"],
            tuned=[a.text for a in tuned_answers],
            tuned_lengths=[a.tokens for a in tuned_answers],
            reference_lengths=scores.ref_lengths,
            max_new_tokens=max_new_tokens,
            schema_valid=scores.metrics.get("json_schema", {}).get("tuned"),
        )
        if questions.refs
        else None,
        scores.lm_eval,
    )


def _notes(questions: Questions, sides, ref_lengths: list[int], max_new_tokens: int) -> list[str]:
    """What a reader must know to trust the numbers: examples the model saw, answers cut short."""
    notes = []
    if questions.examples.source == "train":
        notes.append(
            "the plan holds no examples out, so these are the first training examples, which the tuned model has "
            "seen: the scores flatter it; set data.validation or data.validation_split"
        )
    served = sides["tuned"].served if sides["tuned"] else None
    if served and served["answers_capped_by_max_model_len"]:
        notes.append(
            f"{served['answers_capped_by_max_model_len']} request(s) to the endpoint asked for fewer than max_new_tokens "
            f"({max_new_tokens}) new tokens, so that prompt and answer fit its max_model_len ({served['max_model_len']}); "
            "an answer longer than that is cut there, where the local model would go on"
        )
    cut = sum(length > max_new_tokens for length in ref_lengths)
    if cut:
        notes.append(
            f"{cut} of {len(ref_lengths)} reference answers are longer than max_new_tokens ({max_new_tokens}; the "
            f"longest is {max(ref_lengths)} tokens): no answer to those can match; raise evaluation.max_new_tokens"
        )
    return notes


def _answer_rows(questions: Questions, sides) -> list[dict[str, Any]]:
    """Every prompt with its reference and each side's answers."""
    tuned_answers = sides["tuned"].answers if sides["tuned"] else []
    few = sides.get("few_shot")
    return [
        {
            **({"few_shot": few.answers[i].text, "few_shot_tokens": few.answers[i].tokens} if few else {}),
            "source": source,
            "prompt": prompt.shown,
            "reference": prompt.reference,
            "base": sides["base"].answers[i].text if sides["base"] else None,
            "tuned": tuned_answers[i].text,
            "base_tokens": sides["base"].answers[i].tokens if sides["base"] else None,
            "tuned_tokens": tuned_answers[i].tokens,
        }
        for i, (source, prompt) in enumerate(questions.prompts)
    ]


def _models(run: RunFolder, compare_base: bool, endpoint: Endpoint | None) -> dict[str, str | None]:
    """Which weights each side's answers came from."""
    return {
        "base": "the base weights the run trained against" + (" (the 4-bit base, dequantized)" if run.quantized else "") if compare_base else None,
        "tuned": (
            f"served by {endpoint.shown} as {endpoint.model!r}" if endpoint is not None
            else f"the base with final/'s {run.lock.method.adapter} adapter attached (virtual tokens: nothing to merge)"
            if run.adapter and run.lock.method.merge_refusal
            else "the base with final/'s adapter merged in memory (what merged/ holds)" if run.adapter
            else "final/ (every weight)"
        ),
    }


def evaluate_run(
    run_dir: Path,
    max_examples: int | None = None,
    step: Callable[[str], None] = lambda _: None,
    endpoint: Endpoint | None = None,
    baselines: tuple[str, ...] | None = None,
    few_shot_k: int | None = None,
) -> Evaluation:
    """Score base and tuned; with `endpoint`, the tuned answers come from it (RUN/eval-endpoint.json).
    `baselines` and `few_shot_k` replace the lock's evaluation.baselines and few_shot_k (`ftc eval --baselines`)."""
    started = time.monotonic()
    timings: dict[str, float] = {}
    lmeval.offline()
    run = open_run(run_dir)
    record = read_record(run_dir)
    ev = run.lock.evaluation
    limit = max_examples if max_examples is not None else ev.max_examples
    if not run.lock.method.generates:  # a reward model answers nothing: it scores held-out pairs
        if endpoint is not None:
            raise RunFolderError("a reward model is not served, so --endpoint has nothing to ask; run `ftc eval RUN` without it")
        if baselines:
            raise RunFolderError("a reward model answers nothing, so --baselines has no prompting to compare it with; run `ftc eval RUN` without it")
        from ftc.runtime.evaluate.pairwise import evaluate_reward_model

        return evaluate_reward_model(run, run_dir, limit, step)
    max_new_tokens = ev.max_new_tokens
    asked = bl.resolve(ev, baselines, few_shot_k)
    compare_base = ev.compare_base or asked.zero_shot  # the zero-shot baseline is the base as prompted

    step("reading held-out examples")
    tokenizer = load_tokenizer(run)
    chat_template, _ = locked_chat_template(run)
    questions = read_questions(run, tokenizer, chat_template, limit)
    stop_ids = stop_token_ids(tokenizer, chat_template)
    decoding = Decoding(tokenizer, stop_ids, [tokenizer.decode([i]) for i in stop_ids], max_new_tokens)
    schema = schema_of(run, ev)
    few_shot = None
    if asked.few_shot and questions.prompts:
        step(f"choosing {asked.k} few-shot examples")
        choice = choose_examples(run, questions.examples, asked.k, run.lock.project.seed, tokenizer, chat_template)
        few_shot = FewShot(choice, chat_template)

    step("preparing lm-eval tasks")
    virtual_tokens = bool(run.adapter and run.lock.method.merge_refusal)  # prompt, P- and prefix tuning
    tasks = prepare_tasks(run_dir, list(ev.lm_eval_tasks or []), questions, decoding, limit, virtual_tokens)
    timings["prepare"] = time.monotonic() - started
    sides = ask_models(run, questions, decoding, tasks, compare_base, endpoint, step, timings, few_shot)

    step("scoring")
    scores = score(run, ev, questions, sides, tasks, tokenizer, schema, compare_base)
    diagnosis = _diagnosis(run_dir, run, questions, sides, scores, max_new_tokens)
    baselines_record, baseline_notes = bl.record(asked, ev.headline_metric(), scores.metrics, few_shot, sides.get("few_shot"), diagnosis)
    seconds = time.monotonic() - started
    timings["total"] = seconds
    result = {
        "format_version": EVAL_FORMAT,
        "run": record.run_id or run_dir.name,
        "plan_hash": record.plan_sha256 or plan_hash(run.lock),
        "examples": len(questions.prompts),
        "held_out": {"source": questions.examples.source, "path": questions.examples.path, "max_examples": limit},
        "models": {**_models(run, compare_base, endpoint), **bl.model_of(few_shot)},
        "endpoint": sides["tuned"].served if sides["tuned"] else None,
        "decoding": {
            "do_sample": False,
            "max_new_tokens": max_new_tokens,
            "stop_token_ids": stop_ids,
            "stop_strings": decoding.stop_strings,
            "chat_template_sha256": run.lock.inputs.chat_template.sha256,
            "batch_size": BATCH_SIZE,
            "padding_side": "left",
        },
        "metrics": scores.metrics,
        "json_schema": schema[1],
        "label_field": run.lock.data.label_field,
        "versions": {**m.versions(), **lmeval.versions(), **_model_versions()},
        "lm_eval": scores.lm_eval,
        "gates": scores.gates,
        "notes": _notes(questions, sides, scores.ref_lengths, max_new_tokens) + baseline_notes,
        **({"baselines": baselines_record} if baselines_record else {}),
        **diagnosis.record(),
        "answers": _answer_rows(questions, sides),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    if endpoint is not None:
        result["endpoint"]["answers_equal_to_local"] = _compare_with_local(run_dir, result)
    evaluation = EvalRecord.model_validate(result)
    path = write_evaluation(run_dir, evaluation, EVAL_ENDPOINT if endpoint is not None else EVAL)
    return Evaluation(evaluation, path, evaluation.gates_hold, seconds, timings)


def _compare_with_local(run_dir: Path, served: dict[str, Any]) -> dict[str, Any]:
    """The served tuned answers against eval.json's local ones, prompt by prompt, when both score the same plan
    with the same decoding: equal answers show that what was evaluated is what is served."""
    try:
        local = read_evaluation(run_dir, EVAL)
    except RunFolderError:
        local = None
    if local is None:
        return {"status": "not compared", "reason": f"no {EVAL} from `ftc eval RUN` (without --endpoint) to compare with"}
    if local.plan_hash != served["plan_hash"] or local.decoding.max_new_tokens != served["decoding"]["max_new_tokens"]:
        return {"status": "not compared", "reason": f"{EVAL} scored another plan or other decoding settings"}
    theirs = {a.source: a.tuned for a in local.answers}
    pairs = [(a["source"], theirs[a["source"]], a["tuned"]) for a in served["answers"] if a["source"] in theirs]
    if not pairs:
        return {"status": "not compared", "reason": f"{EVAL} has none of these prompts"}
    equal = sum(lo == se for _, lo, se in pairs)
    first = next(({"source": src, "local": lo, "served": se} for src, lo, se in pairs if lo != se), None)
    return {"status": "compared", "equal": equal, "compared": len(pairs), "first_difference": first}


def _model_versions() -> dict[str, str]:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("torch", "transformers", "peft")}


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delta(base: float | None, tuned: float | None) -> str:
    return "-" if base is None or tuned is None else f"{tuned - base:+.4f}"


def print_evaluation(console, evaluation: Evaluation) -> None:
    """The scores side by side, the lm-eval tasks, each gate with its numbers, and the diagnosis."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    r = evaluation.record
    how = f"greedy, max_new_tokens {r.decoding.max_new_tokens}" if r.decoding.max_new_tokens else "each answer scored by the reward model"
    console.print(f"{r.examples} held-out example(s) from {r.held_out.path} ({r.held_out.source}), {how}", markup=False)
    served = r.endpoint
    if served:
        console.print(f"tuned: {r.models.tuned}; prompt token ids equal to ftc's rendering: {served['prompt_ids_match']}", markup=False)
        if served.get("first_prompt_mismatch"):
            miss = served["first_prompt_mismatch"]
            console.print(
                Text(f"the server renders prompts differently from the locked chat template, from token {miss['at_token']}: "
                     f"ftc {miss['ftc']!r}, served {miss['served']!r}", style="yellow")
            )
        same = served.get("answers_equal_to_local") or {}
        if same.get("status") == "compared":
            style = "green" if same["equal"] == same["compared"] else "yellow"
            console.print(Text(f"served answers equal to eval.json's local ones: {same['equal']}/{same['compared']}", style=style))
        else:
            console.print(Text(f"served answers not compared with local ones: {same.get('reason')}", style="dim"))
    table = Table(box=box.SIMPLE_HEAD)
    columns = bl.columns(r)
    for name, justify in (("metric", "left"), *((c[0], "right") for c in columns), ("reference", "right"), ("note", "left")):
        table.add_column(name, justify=justify, overflow="fold", no_wrap=name != "note")  # numbers and names stay whole
    for name, row in r.metrics.items():
        cells = [c[1](row) for c in columns]
        table.add_row(name, *cells, _num(row.get("reference")), Text(row["note"] or "", style="dim"))
    console.print(table)
    for line in bl.summary(r):
        console.print(Text(line, style="dim"))
    if r.lm_eval:
        lm = Table(box=box.SIMPLE_HEAD, title="lm-eval", title_justify="left")
        for name, justify in (("task", "left"), ("metric", "left"), ("base", "right"), ("tuned", "right"), ("delta", "right"), ("note", "left")):
            lm.add_column(name, justify=justify, overflow="fold")
        for task, res in r.lm_eval.items():
            if res["status"] != "ok":
                lm.add_row(task, "-", "-", "-", "-", Text(f"unavailable: {res['reason']}", style="yellow"))
                continue
            metric = res["metric"]
            b = res["base"].get(metric) if res["base"] else None
            t = res["tuned"].get(metric) if res["tuned"] else None
            agree = res.get("answers_agree_with_ftc")
            note = f"{res['examples']} examples" + (f"; answers equal to ftc's: {', '.join(f'{k} {v}' for k, v in agree.items())}" if agree else "")
            lm.add_row(task, metric, _num(b), _num(t), _delta(b, t), Text(note, style="dim"))
        console.print(lm)
    for gate in r.gates:
        if gate.error:
            console.print(Text("✗ ", style="red bold") + Text(f"{gate.gate}: {gate.error}"))
        else:
            op = parse_gate(gate.gate).op
            mark = Text("✓ ", style="green bold") if gate.holds else Text("✗ ", style="red bold")
            console.print(mark + Text(f"{gate.gate}: {gate.left:.4f} {op} {gate.right:.4f}"))
    if not r.gates:
        console.print("no gates (evaluation.gates is empty)", markup=False)
    for f in r.diagnosis:
        console.print(Text(f"{f.finding}: ", style="yellow bold") + Text(f.evidence))
        console.print(Text(f"  remedy: {f.remedy}", style="dim"))
    if not r.diagnosis:
        console.print("diagnosis: nothing found", markup=False)
    for item in r.not_checked:
        console.print(Text(f"not checked: {item.finding}: {item.reason}", style="dim"))
    for note in r.notes:
        console.print(Text(f"note: {note}", style="yellow"))
