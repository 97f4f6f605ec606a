"""`ftc eval RUN`: score the base and the tuned model side by side on the run's held-out examples, check the
spec's gates, name what went wrong, and keep everything in RUN/eval.json.

Both models answer the same prompts: each held-out example up to its answer, rendered with the locked chat
template and its generation prompt (runtime/samples.py prompt_of), decoded greedily in left-padded batches,
stopping at the EOS or the template's end-of-turn token, or after evaluation.max_new_tokens. The base is the
weights the run trained against; the tuned model is the base with final/'s adapter merged in memory (what
`ftc merge` writes and verifies), or final/ itself for full fine-tuning. The answers are scored with the
metrics the lock's [evaluation] lists (runtime/metrics.py), the lm-eval harness scores the same held-out task
and any general tasks (runtime/lmeval.py), the gates are checked, and runtime/diagnose.py reads the loss
curves and the scores.

eval.json (format_version 1) is written atomically; its shape is documented in README.md ("Evaluating a run").
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.spec.gates import Gate, parse_gate
from ftc.compiler.hashing import sha256_bytes
from ftc.compiler.build.lock import plan_hash, write_atomic

from ftc.runtime.evaluate import lmeval
from ftc.runtime.evaluate import metrics as m
from ftc.runtime.evaluate.diagnose import Answers, diagnose
from ftc.runtime.evaluate.endpoint import Endpoint, endpoint_answers
from ftc.runtime.heldout import held_out
from ftc.runtime.merge import stop_token_ids
from ftc.runtime.models import (
    RunFolder,
    attach_adapter,
    load_tokenizer,
    load_trained_base,
    load_tuned,
    locked_chat_template,
    open_run,
    placement,
)
from ftc.runtime.runfolder import RunFolderError, read_events, read_record
from ftc.runtime.evaluate.samples import Answer, Prompt, generate_answers, prompt_of

EVAL = "eval.json"
EVAL_ENDPOINT = "eval-endpoint.json"  # `ftc eval --endpoint`: the tuned side as served; eval.json stays as it was
FORMAT_VERSION = 1
SIDES = ("base", "tuned")
BATCH_SIZE = 16  # prompts per generate() call; see samples.generate_answers


@dataclass
class Evaluation:
    """What `ftc eval` measured: the eval.json record, and whether every gate held."""

    record: dict[str, Any]
    path: Path
    gates_hold: bool
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def resolve_run(target: Path, root: Path | None = None) -> Path:
    """A run folder as it is; a spec (.toml) means its newest completed run under <root>/runs/<name>/, root
    being the working folder, as `ftc run SPEC` places runs."""
    if target.is_dir():
        return target
    try:
        name = tomllib.loads(target.read_text(encoding="utf-8"))["project"]["name"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunFolderError(f"{target} is neither a run folder nor a spec with project.name ({exc})") from exc
    folder = (root or Path.cwd()) / "runs" / name
    runs = sorted(p for p in folder.glob("*") if (p / "run.json").is_file()) if folder.is_dir() else []
    completed = [p for p in runs if _status(p) == "completed"]
    if not completed:
        seen = f" ({len(runs)} run(s) there, none completed)" if runs else ""
        raise RunFolderError(f"no completed run of {name} in {folder}{seen}; train one with `ftc run {target}`")
    return completed[-1]


def _status(run_dir: Path) -> str | None:
    try:
        return read_record(run_dir).get("status")
    except RunFolderError:
        return None


def _schema(run: RunFolder, ev: dict[str, Any]) -> tuple[Any, dict[str, Any] | None, str | None]:
    """The JSON Schema validator, its record (path, sha256), and why there is none."""
    if not ev.get("json_schema"):
        return None, None, "no evaluation.json_schema"
    spec_dir = (run.root / run.lock["inputs"]["spec"]["path"]).parent
    path = spec_dir / ev["json_schema"]
    if not path.is_file():
        return None, None, f"the JSON Schema {path} is missing"
    data = path.read_bytes()
    info = {"path": str(path.relative_to(run.root) if path.is_relative_to(run.root) else path), "sha256": sha256_bytes(data)}
    try:
        return m.schema_validator(json.loads(data)), info, None
    except Exception as exc:  # noqa: BLE001 - invalid JSON or an invalid schema: both mean "cannot score"
        return None, info, f"the JSON Schema {path} is not usable: {str(exc).splitlines()[0][:200]}"


@dataclass(frozen=True)
class _Side:
    answers: list[Answer]
    lm_eval: dict[str, dict[str, Any]]
    served: dict[str, Any] | None = None  # through an endpoint: how its prompts compare with ftc's rendering


def _run_side(model, tokenizer, texts, stop_ids, max_new_tokens, manager, tasks, limit, step, name) -> _Side:
    from transformers import GenerationConfig

    def done(n: int) -> None:
        step(f"{name}: {n}/{len(texts)} answers")

    done(0)
    answers = generate_answers(model, tokenizer, texts, stop_ids, max_new_tokens, BATCH_SIZE, done) if texts else []
    results: dict[str, dict[str, Any]] = {}
    if tasks:
        step(f"{name}: lm-eval {', '.join(tasks)}")
        # lm-eval generates with the model's own generation config plus its stop strings: make that config the
        # plain greedy one ftc uses, so that no sampling default or repetition penalty of the model applies.
        model.generation_config = GenerationConfig(do_sample=False, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
        results = lmeval.score(model, tokenizer, manager, tasks, limit)
    return _Side(answers, results)


def _served_side(endpoint: Endpoint, prompts: list[Prompt], tokenizer, stop_ids, max_new_tokens, manager, tasks, limit, step) -> _Side:
    """The tuned side through the endpoint: ftc's client for the metrics, lm-eval's completions backend for the tasks."""
    def done(n: int) -> None:
        step(f"tuned (served): {n}/{len(prompts)} answers")

    done(0)
    served = endpoint_answers(endpoint, prompts, tokenizer, stop_ids, max_new_tokens, done)
    results: dict[str, dict[str, Any]] = {}
    if tasks:
        step(f"tuned (served): lm-eval {', '.join(tasks)}")
        results = lmeval.score_endpoint(endpoint, tokenizer, stop_ids, manager, tasks, limit)
    facts = {
        "url": endpoint.shown,
        "model": endpoint.model,
        "api_key_env": endpoint.key_env,
        "max_model_len": endpoint.served.get("max_model_len"),
        "root": endpoint.served.get("root"),
        "prompt_ids_match": (
            "not returned by the server" if served.prompt_ids_match < 0 else f"{served.prompt_ids_match}/{len(prompts)}"
        ),
        "first_prompt_mismatch": served.first_mismatch,
        "answers_capped_by_max_model_len": served.capped,
    }
    return _Side(served.answers, results, facts)


def _metric_rows(names, sides: dict[str, list[str] | None], lengths, refs, label_field, validator, schema_note, ref_lengths):
    """{"metric": {"base": float|None, "tuned": ..., "note": ..., ["reference": ...]}} for every listed metric."""
    scores = {
        side: (m.compute(names, answers, lengths[side], refs, label_field=label_field, validator=validator) if answers is not None else None)
        for side, answers in sides.items()
    }
    # intrinsic metrics also describe the references: what the answers should look like
    references = [r.reference for r in refs]
    intrinsic = m.compute(
        [n for n in names if n in ("json_valid", "distinct_n", "mean_length")], references, ref_lengths, refs
    )
    rows: dict[str, dict[str, Any]] = {}
    keys = next((list(s) for s in scores.values() if s is not None), list(names))
    for key in keys:
        notes = {}
        row: dict[str, Any] = {}
        for side in SIDES:
            score = scores.get(side)
            if score is None:
                row[side] = None
                notes[side] = "compare_base = false: the base model was not evaluated"
            else:
                row[side] = score[key].value
                notes[side] = score[key].note
        if key == "json_schema" and schema_note:
            notes = {side: schema_note for side in SIDES}
        distinct_notes = {n for n in notes.values() if n}
        row["note"] = (
            None if not distinct_notes
            else distinct_notes.pop() if len(distinct_notes) == 1
            else "; ".join(f"{side}: {note}" for side, note in notes.items() if note)
        )
        if key in intrinsic:
            row["reference"] = intrinsic[key].value
        rows[key] = row
    return rows


def _gate_scores(metric_rows, lm_results) -> dict[str, dict[str, float | None]]:
    scores: dict[str, dict[str, float | None]] = {side: {} for side in SIDES}
    for name, row in metric_rows.items():
        for side in SIDES:
            scores[side][name] = row[side]
    for task, result in lm_results.items():
        for side in SIDES:
            values = result.get(side)
            scores[side][task] = values.get(result["metric"]) if values and result.get("metric") else None
    return scores


def check_gates(gates: list[str], scores: dict[str, dict[str, float | None]], why: dict[str, str]) -> list[dict[str, Any]]:
    """Each gate with its two sides' numbers; a gate on a metric that has no number is an error that says why."""
    results = []
    for text in gates:
        try:
            gate = parse_gate(text)
        except ValueError as exc:
            results.append({"gate": text, "holds": False, "left": None, "right": None, "error": str(exc)})
            continue
        missing = [
            f"{side}.{metric}" for side, metric in _operands(gate) if scores.get(side, {}).get(metric) is None
        ]
        if missing:
            reasons = "; ".join(
                f"{name}: {why.get(name) or why.get(name.split('.', 1)[1]) or 'not computed: the plan does not evaluate it'}" for name in missing
            )
            results.append({"gate": text, "holds": False, "left": None, "right": None, "error": f"cannot be checked: {reasons}"})
            continue
        left = scores[gate.side][gate.metric]
        right = gate.offset + (scores[gate.ref_side][gate.ref_metric] if gate.ref_side and gate.ref_metric else 0.0)
        results.append({"gate": text, "holds": bool(gate.holds(scores)), "left": left, "right": right, "error": None})
    return results


def _operands(gate: Gate) -> list[tuple[str, str]]:
    pairs = [(gate.side, gate.metric)]
    if gate.ref_side and gate.ref_metric:
        pairs.append((gate.ref_side, gate.ref_metric))
    return pairs


def evaluate_run(
    run_dir: Path,
    max_examples: int | None = None,
    step: Callable[[str], None] = lambda _: None,
    endpoint: Endpoint | None = None,
) -> Evaluation:
    """Score base and tuned; with `endpoint`, the tuned answers come from it (RUN/eval-endpoint.json)."""
    started = time.monotonic()
    timings: dict[str, float] = {}
    lmeval.offline()
    run = open_run(run_dir)
    record = read_record(run_dir)
    ev = run.lock["evaluation"]
    limit = max_examples if max_examples is not None else ev.get("max_examples")
    max_new_tokens = ev["max_new_tokens"]
    compare_base = ev["compare_base"]

    step("reading held-out examples")
    tokenizer = load_tokenizer(run)
    chat_template, _ = locked_chat_template(run)
    fmt = run.lock["data"]["format"]
    label_field = run.lock["data"].get("label_field")
    examples = held_out(run, limit)
    prompts: list[tuple[str, Prompt]] = []
    refs: list[m.Example] = []
    if fmt != "text":
        from ftc.compiler.data.check import label_of

        for item in examples.records:
            prompt = prompt_of(item.value, fmt, tokenizer, chat_template)
            if prompt is not None:
                prompts.append((f"{examples.path}:{item.where}", prompt))
                refs.append(m.Example(prompt.reference, label_of(item.value, fmt, label_field) if label_field else None))
    texts = [p.text for _, p in prompts]
    stop_ids = stop_token_ids(tokenizer, chat_template)
    stop_strings = [tokenizer.decode([i]) for i in stop_ids]
    validator, schema_info, schema_note = _schema(run, ev)

    step("preparing lm-eval tasks")
    general = list(ev.get("lm_eval_tasks") or [])
    task = lmeval.write_heldout_task(run_dir, texts, [r.reference for r in refs], stop_strings, max_new_tokens) if texts else None
    manager = lmeval.task_manager(task, general)
    unavailable = {name: why for name in general if (why := lmeval.check_available(manager, name))}
    tasks = ([lmeval.HELDOUT_TASK] if task else []) + [g for g in general if g not in unavailable]
    timings["prepare"] = time.monotonic() - started

    sides: dict[str, _Side | None] = {"base": None, "tuned": None}
    if texts or tasks:  # text data with no general task: nothing to ask the models
        place = placement(run.lock)
        if endpoint is not None:  # first: a server that cannot answer is known before the base's minutes
            mark = time.monotonic()
            sides["tuned"] = _served_side(endpoint, [p for _, p in prompts], tokenizer, stop_ids, max_new_tokens, manager, tasks, limit, step)
            timings["tuned"] = time.monotonic() - mark
        mark = time.monotonic()
        step("base: loading")
        base = load_trained_base(run, place) if (compare_base or (run.adapter and endpoint is None)) else None
        if compare_base:
            sides["base"] = _run_side(base, tokenizer, texts, stop_ids, max_new_tokens, manager, tasks, limit, step, "base")
        timings["base"] = time.monotonic() - mark
        if endpoint is None:
            mark = time.monotonic()
            step("tuned: loading")
            if run.adapter:
                tuned = attach_adapter(run, base).merge_and_unload()  # merges into base's own modules
            else:
                del base
                tuned = load_tuned(run, place)
            sides["tuned"] = _run_side(tuned, tokenizer, texts, stop_ids, max_new_tokens, manager, tasks, limit, step, "tuned")
            del tuned
            timings["tuned"] = time.monotonic() - mark

    step("scoring")
    # None: that model was not evaluated (compare_base = false); []: there was nothing to ask it
    answer_texts = {
        side: [a.text for a in s.answers] if s else (None if side == "base" and not compare_base else [])
        for side, s in sides.items()
    }
    lengths = {side: ([a.tokens for a in s.answers] if s else []) for side, s in sides.items()}
    ref_lengths = [len(tokenizer(r.reference, add_special_tokens=False)["input_ids"]) for r in refs]
    metric_rows = _metric_rows(ev["metrics"], answer_texts, lengths, refs, label_field, validator, schema_note, ref_lengths)
    lm_results = _lm_eval_record(sides, general, unavailable, task, answer_texts, fmt)
    scores = _gate_scores(metric_rows, lm_results)
    why = {name: row["note"] for name, row in metric_rows.items() if row["note"]}
    why |= {name: r["reason"] for name, r in lm_results.items() if r.get("reason")}
    if not compare_base:
        why |= {f"base.{name}": "compare_base = false: the base model was not evaluated" for name in scores["base"]}
    gates = check_gates(list(ev.get("gates") or []), scores, why)

    tuned_answers = sides["tuned"].answers if sides["tuned"] else []
    diagnosis = diagnose(
        read_events(run_dir),
        run.lock["method"]["kind"],
        Answers(
            references=[r.reference for r in refs],
            base=answer_texts["base"],
            tuned=[a.text for a in tuned_answers],
            tuned_lengths=[a.tokens for a in tuned_answers],
            reference_lengths=ref_lengths,
            max_new_tokens=max_new_tokens,
            schema_valid=metric_rows.get("json_schema", {}).get("tuned"),
        )
        if refs
        else None,
        lm_results,
    )
    notes = []
    if examples.source == "train":
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
    seconds = time.monotonic() - started
    timings["total"] = seconds
    result = {
        "format_version": FORMAT_VERSION,
        "run": record.get("run_id") or run_dir.name,
        "plan_hash": record.get("plan_sha256") or plan_hash(run.lock),
        "examples": len(prompts),
        "held_out": {"source": examples.source, "path": examples.path, "max_examples": limit},
        "models": {
            "base": "the base weights the run trained against" + (" (the 4-bit base, dequantized)" if run.quantized else "") if compare_base else None,
            "tuned": (
                f"served by {endpoint.shown} as {endpoint.model!r}" if endpoint is not None
                else "the base with final/'s adapter merged in memory (what merged/ holds)" if run.adapter
                else "final/ (every weight)"
            ),
        },
        "endpoint": sides["tuned"].served if sides["tuned"] else None,
        "decoding": {
            "do_sample": False,
            "max_new_tokens": max_new_tokens,
            "stop_token_ids": stop_ids,
            "stop_strings": stop_strings,
            "chat_template_sha256": run.lock["inputs"]["chat_template"]["sha256"],
            "batch_size": BATCH_SIZE,
            "padding_side": "left",
        },
        "metrics": metric_rows,
        "json_schema": schema_info,
        "label_field": label_field,
        "versions": {**m.versions(), **lmeval.versions(), **_model_versions()},
        "lm_eval": lm_results,
        "gates": gates,
        "notes": notes,
        **diagnosis.record(),
        "answers": [
            {
                "source": source,
                "prompt": prompt.shown,
                "reference": prompt.reference,
                "base": sides["base"].answers[i].text if sides["base"] else None,
                "tuned": tuned_answers[i].text,
                "base_tokens": sides["base"].answers[i].tokens if sides["base"] else None,
                "tuned_tokens": tuned_answers[i].tokens,
            }
            for i, (source, prompt) in enumerate(prompts)
        ],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    if endpoint is not None:
        result["endpoint"]["answers_equal_to_local"] = _compare_with_local(run_dir / EVAL, result)
    path = run_dir / (EVAL_ENDPOINT if endpoint is not None else EVAL)
    write_atomic(path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    holds = all(g["holds"] for g in gates)
    return Evaluation(result, path, holds, seconds, timings)


def _compare_with_local(local_path: Path, served: dict[str, Any]) -> dict[str, Any]:
    """The served tuned answers against eval.json's local ones, prompt by prompt, when both score the same plan
    with the same decoding: equal answers show that what was evaluated is what is served."""
    try:
        local = json.loads(local_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"status": "not compared", "reason": f"no {EVAL} from `ftc eval RUN` (without --endpoint) to compare with"}
    if local.get("plan_hash") != served["plan_hash"] or local.get("decoding", {}).get("max_new_tokens") != served["decoding"]["max_new_tokens"]:
        return {"status": "not compared", "reason": f"{EVAL} scored another plan or other decoding settings"}
    theirs = {a["source"]: a["tuned"] for a in local.get("answers") or []}
    pairs = [(a["source"], theirs[a["source"]], a["tuned"]) for a in served["answers"] if a["source"] in theirs]
    if not pairs:
        return {"status": "not compared", "reason": f"{EVAL} has none of these prompts"}
    equal = sum(lo == se for _, lo, se in pairs)
    first = next(({"source": src, "local": lo, "served": se} for src, lo, se in pairs if lo != se), None)
    return {"status": "compared", "equal": equal, "compared": len(pairs), "first_difference": first}


def _lm_eval_record(sides, general, unavailable, task, answer_texts, fmt) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    names = ([lmeval.HELDOUT_TASK] if task or fmt == "text" else []) + general
    for name in names:
        kind = "held_out" if name == lmeval.HELDOUT_TASK else "general"
        if name in unavailable or (kind == "held_out" and task is None):
            reason = unavailable.get(name) or "the held-out data has no prompt/answer pairs (text data)"
            out[name] = {"status": "unavailable", "kind": kind, "metric": None, "examples": 0, "base": None, "tuned": None, "reason": reason}
            continue
        first = next((s.lm_eval[name] for s in (sides["tuned"], sides["base"]) if s is not None and "error" not in s.lm_eval[name]), None)
        if first is None:
            reason = "; ".join(s.lm_eval[name]["error"] for s in (sides["tuned"], sides["base"]) if s is not None)
            out[name] = {"status": "unavailable", "kind": kind, "metric": None, "examples": 0, "base": None, "tuned": None, "reason": reason}
            continue
        entry: dict[str, Any] = {
            "status": "ok", "kind": kind, "metric": first["metric"], "examples": first["examples"],
            "base": None, "tuned": None, "reason": None,
        }
        for side in SIDES:
            s = sides[side]
            if s is None:
                continue
            result = s.lm_eval[name]
            if "error" in result:  # the endpoint could not run this task
                entry["reason"] = f"{side}: {result['error']}"
                continue
            entry[side] = result["scores"]
            if kind == "held_out":
                theirs = [sample["filtered_resps"][0] for sample in result["samples"]]
                ours = answer_texts[side] or []
                agree = sum(a.strip() == b.strip() for a, b in zip(theirs, ours, strict=True))
                entry.setdefault("answers_agree_with_ftc", {})[side] = f"{agree}/{len(ours)}"
                differ = next(((k, a, b) for k, (a, b) in enumerate(zip(theirs, ours)) if a.strip() != b.strip()), None)
                if differ:
                    k, a, b = differ
                    entry.setdefault("first_disagreement", {})[side] = {"example": k, "lm_eval": a, "ftc": b}
        if sides["base"] is None:
            entry["reason"] = "compare_base = false: the base model was not evaluated"
        if sides["tuned"] is not None and sides["tuned"].served:
            entry["tuned_via"] = "the endpoint, with lm-eval's local-completions backend"
        out[name] = entry
    return out


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
    held = r["held_out"]
    console.print(
        f"{r['examples']} held-out example(s) from {held['path']} ({held['source']}), greedy, "
        f"max_new_tokens {r['decoding']['max_new_tokens']}",
        markup=False,
    )
    served = r.get("endpoint")
    if served:
        console.print(f"tuned: {r['models']['tuned']}; prompt token ids equal to ftc's rendering: {served['prompt_ids_match']}", markup=False)
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
    for name, justify in (("metric", "left"), ("base", "right"), ("tuned", "right"), ("delta", "right"), ("reference", "right"), ("note", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for name, row in r["metrics"].items():
        table.add_row(name, _num(row["base"]), _num(row["tuned"]), _delta(row["base"], row["tuned"]), _num(row.get("reference")), Text(row["note"] or "", style="dim"))
    console.print(table)
    if r["lm_eval"]:
        lm = Table(box=box.SIMPLE_HEAD, title="lm-eval", title_justify="left")
        for name, justify in (("task", "left"), ("metric", "left"), ("base", "right"), ("tuned", "right"), ("delta", "right"), ("note", "left")):
            lm.add_column(name, justify=justify, overflow="fold")
        for task, res in r["lm_eval"].items():
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
    for gate in r["gates"]:
        if gate["error"]:
            console.print(Text("✗ ", style="red bold") + Text(f"{gate['gate']}: {gate['error']}"))
        else:
            op = parse_gate(gate["gate"]).op
            mark = Text("✓ ", style="green bold") if gate["holds"] else Text("✗ ", style="red bold")
            console.print(mark + Text(f"{gate['gate']}: {gate['left']:.4f} {op} {gate['right']:.4f}"))
    if not r["gates"]:
        console.print("no gates (evaluation.gates is empty)", markup=False)
    for f in r["diagnosis"]:
        console.print(Text(f"{f['finding']}: ", style="yellow bold") + Text(f["evidence"]))
        console.print(Text(f"  remedy: {f['remedy']}", style="dim"))
    if not r["diagnosis"]:
        console.print("diagnosis: nothing found", markup=False)
    for item in r["not_checked"]:
        console.print(Text(f"not checked: {item['finding']}: {item['reason']}", style="dim"))
    for note in r.get("notes") or []:
        console.print(Text(f"note: {note}", style="yellow"))
