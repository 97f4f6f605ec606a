"""`ftc report RUN`: one self-contained HTML page about a run, RUN/report.html by default.

The page reads only what the run folder holds, plus the project's spec and data for the token lengths:
  - the header: run.json (status, device, dates, steps, final losses, tokens/s, peak memory, sessions, the merge
    verification, versions) and the run's ftc.lock.json (plan hash, model, method, data);
  - the loss curves: the "log" events of events.jsonl (train "loss" and "eval_loss" by step). A resumed session
    restarts from its checkpoint's step, so the points an earlier session logged after that step are dropped,
    as the run dropped the training behind them;
  - the token lengths: measured again as `ftc data check` measures them (compiler/data/check.py), but only while
    the spec, the data and the model still hash as the run's lock records and the counts agree with the lock's;
    otherwise the page says what changed rather than plotting other data;
  - the evaluation: eval.json (written by `ftc eval RUN`): metrics base versus tuned, gates, diagnosis, lm-eval;
  - serving: the exports `ftc export` gated, the parity checks `ftc serve` recorded in run.json (one per mode), and
    eval-endpoint.json (written by `ftc eval RUN --endpoint URL`): the served model's scores next to the local
    tuned model's, and how many answers were equal;
  - a few answers side by side: eval.json's, or samples.json's (written by `ftc run`) before an evaluation.

Plots are PNGs inlined as data: URIs; the CSS is inline; there is no script and no external resource, so the
file can be mailed or attached to a pull request. Every value from the run (data, model answers, notes) is
HTML-escaped. Nothing on the page depends on when or where the report is made: the same run folder and
project give the same bytes.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from ftc.compiler.atomic import write_atomic
from ftc.compiler.plan.model import Lock
from ftc.runtime.evaluate import baselines
from ftc.runtime.report import plots
from ftc.runtime.report.gather import ANSWER_CHARS, Report, gather_report, is_number
from ftc.runtime.report.rewards import reward_section
from ftc.runtime.runfolder import (
    EVAL,
    EVAL_ENDPOINT,
    EVENTS,
    LOCK,
    REPORT,
    RUN_RECORD,
    Device,
    EvalRecord,
    MergeCheck,
    ParityCheck,
    RunRecord,
    live_process,
)


def shown_status(record: RunRecord) -> str | None:
    """run.json's status, except for a "running" run that no process runs any more: it was killed."""
    if record.status == "running" and not live_process(record):
        return "killed (run.json says running, and no process of the run is left; resume it or start a new one)"
    return record.status


def write_report(run_dir: Path, output: Path | None = None, step: Callable[[str], None] = lambda label: None) -> tuple[Path, Report]:
    """Gather the run's report and write it as one HTML file (RUN/report.html unless `output`)."""
    report = gather_report(run_dir, step)
    step("drawing the plots")
    page = render_html(report)
    path = output if output is not None else run_dir / REPORT
    write_atomic(path, page)
    return path, report


# ---- rendering ------------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1b1b1b;background:#fff;
  max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:18px;margin:32px 0 8px;padding-bottom:4px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}h4{font-size:11px;margin:0 0 4px;color:#555;text-transform:uppercase;letter-spacing:.04em}
.sub{color:#555;margin:0 0 16px}.muted{color:#666;font-weight:normal}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f4f4f4}.facts th{background:#f7f7f7;white-space:nowrap;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,pre,.hash{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace;font-size:12.5px}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:0}
.pass{color:#0a7a2f;font-weight:600}.fail{color:#b00020;font-weight:600}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:8px 12px;margin:8px 0}
figure{margin:8px 0 16px}figcaption{color:#444;font-size:13px}img{max-width:100%;height:auto;border:1px solid #eee}
.example{border:1px solid #ddd;border-radius:6px;padding:10px 12px;margin:12px 0}
.example h3{margin:0 0 8px}.prompt{margin-bottom:8px}
.side{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:10px}.side>div{background:#fafafa;padding:6px 8px;border-radius:4px}
.empty{color:#888;font-style:italic}footer{margin-top:40px;color:#666;font-size:12px}
"""


def e(value: Any) -> str:
    """Text as HTML: whatever it holds never becomes markup."""
    return html.escape(str(value), quote=True)


def _fmt(value: Any, spec: str = ".4f") -> str:
    if not is_number(value):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return format(value, spec) if math.isfinite(value) else str(value)


def _delta(base: Any, tuned: Any) -> str:
    if not (is_number(base) and is_number(tuned)):
        return "–"
    return format(tuned - base, "+.4f")


def _image(png: bytes, alt: str) -> str:
    width, height = plots.pixel_size()
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}" width="{width}" height="{height}">'


def _table(head: list[str], rows: list[list[str]], numeric: Collection[int] = (), cls: str | None = None) -> str:
    """A table from HTML cells (already escaped); the columns in `numeric` align right."""

    def cell(tag: str, i: int, content: str) -> str:
        return f'<{tag} class="num">{content}</{tag}>' if i in numeric else f"<{tag}>{content}</{tag}>"

    header = "".join(cell("th", i, e(h)) for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    opening = f'<table class="{e(cls)}">' if cls else "<table>"
    return f"{opening}<thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _note(text: str) -> str:
    return f'<p class="note">{e(text)}</p>'


def _device(device: Device | None) -> str:
    if not device:
        return "not recorded"
    parts = [device.precision]
    if device.kind == "cpu" and device.threads:
        parts.append(f"{device.threads} threads")
    if device.count:
        parts.append(f"{device.count} device(s)")
    name = device.name or device.kind
    kind = device.kind
    label = name if name == kind else f"{kind}: {name}"
    return f"{label} ({', '.join(str(p) for p in parts if p)})"


def _merge(merge: MergeCheck | None, run: str) -> str:
    """The merge verification of run.json, as HTML."""
    if not merge:
        return f"not merged yet: <code>ftc merge {e(run)}</code>"
    status = merge.status
    if status == "verified" or status == "failed":
        top1 = merge.top1_agreement
        top1 = f"{top1:.1%}" if is_number(top1) else "–"
        return e(
            f"{status}: max |Δlogit| {_fmt(merge.max_abs_logit_diff, '.3g')}, mean {_fmt(merge.mean_abs_logit_diff, '.3g')}, "
            f"top-1 agreement {top1} over {merge.positions} positions of {merge.examples} examples ({merge.dtype}), "
            f"in {merge.path}/"
        )
    return e(f"{status}: {merge.reason or ''}".rstrip(": "))


def _method(lock: Lock) -> str:
    method = lock.method
    parts = [method.kind]
    if method.adapter == "lora":
        parts.append(f"r {method.r}, lora_alpha {method.lora_alpha}")
    elif method.produces_adapter:
        shown = {key: value for key, value in method.peft_arguments().items() if value is not None}
        parts.append(", ".join(f"{key} {value}" for key, value in shown.items()))
    trainable, total = method.trainable_params, method.total_params
    if is_number(trainable) and is_number(total) and total:
        parts.append(f"{trainable:,} of {total:,} parameters trained ({trainable / total:.2%})")
    return "; ".join(parts)


def _data(lock: Lock) -> str:
    splits = lock.data.splits
    listed = [
        f"{name} {_fmt(s.examples)} examples ({_fmt(s.tokens)} tokens, longest {_fmt(s.longest)})"
        for name, s in sorted(splits.items(), key=lambda kv: (kv[0] != "train", kv[0]))
    ]
    return f"{'; '.join(listed)}; max_length {lock.data.max_length}"


def _sessions(record: RunRecord) -> str:
    if not record.sessions:
        return "not recorded"
    lines = []
    for i, s in enumerate(record.sessions, 1):
        steps = f"steps {s.first_step}–{s.last_step}" if s.last_step is not None else "no steps"
        resumed = f", resumed from {s.resumed_from}" if s.resumed_from else ""
        lines.append(f"{i}. {s.started or '?'} to {s.ended or '?'}: {s.status or 'running'}, {steps}{resumed}")
    return "<br>".join(e(line) for line in lines)


def _header(r: Report) -> str:
    rec, lock = r.record, r.lock
    recorded = rec.model_fields_set  # a loss recorded as None means none was measured; one not recorded is read from the events
    project = rec.project or lock.project.name
    run_id = rec.run_id or Path(r.run).name
    last_train = r.train_loss[-1][1] if r.train_loss else None
    last_validation = r.validation_loss[-1][1] if r.validation_loss else None
    train_loss = rec.train_loss if "train_loss" in recorded else last_train
    eval_loss = rec.eval_loss if "eval_loss" in recorded else last_validation
    max_steps = _fmt(rec.max_steps if "max_steps" in recorded else lock.training.max_steps)
    steps = f"{_fmt(rec.step)} of {max_steps}" if is_number(rec.step) else f"not recorded (of {max_steps})"
    if rec.early_stopped:
        steps += f" (stopped early: the validation loss stopped improving; final/ holds {rec.best_checkpoint})"
    memory = rec.peak_memory_gib
    versions = "; ".join(
        part for part in (f"ftc {rec.ftc_version}" if rec.ftc_version else "", ", ".join(f"{k} {v}" for k, v in sorted(rec.packages.items()) if v)) if part
    ) or "not recorded"
    facts = [
        ("status", e(shown_status(rec) or "not recorded")),
        ("plan", f'<span class="hash">sha256:{e(r.plan_hash)}</span>'),
        ("spec", f"<code>{e(rec.spec or lock.inputs.spec.path)}</code>"),
        ("base model", f"<code>{e(lock.inputs.model.reference)}</code>"),
        ("method", e(_method(lock))),
        ("data", e(_data(lock))),
        ("device", e(_device(rec.device))),
        ("started", e(rec.started or "not recorded")),
        ("ended", e(rec.ended or "not recorded")),
        ("steps", e(steps)),
        ("final train loss", e(_fmt(train_loss))),
        ("final validation loss", e(_fmt(eval_loss) if eval_loss is not None else "none (no validation data)")),
        ("tokens/s", e(_fmt(rec.tokens_per_second, ",.0f"))),
        ("peak memory", e(f"{memory:.2f} GiB ({rec.peak_memory_kind})" if is_number(memory) else "not reported")),
        ("sessions", _sessions(rec)),
        ("merge", e(f"not possible: {lock.method.merge_refusal}") if lock.method.merge_refusal else _merge(rec.merge, r.run)),
        ("versions", e(versions)),
    ]
    if rec.version_drift:
        facts.append(("version drift", "<br>".join(e(d) for d in rec.version_drift)))
    rows = "".join(f"<tr><th>{e(label)}</th><td>{value}</td></tr>" for label, value in facts)
    return (
        f"<header><h1>{e(project)} <span class=\"muted\">run {e(run_id)}</span></h1>"
        f'<p class="sub">ftc report of <code>{e(r.run)}</code></p><table class="facts">{rows}</table></header>'
    )


def _losses(r: Report) -> str:
    parts = ['<section id="loss"><h2>Loss</h2>']
    if not (r.train_loss or r.validation_loss):
        parts.append(_note("no loss was logged (events.jsonl has no \"log\" event with a loss); the run logs every "
                           f"{r.lock.training.logging_steps} steps"))
        return "".join(parts) + "</section>"
    png = plots.loss_curves(r.train_loss, r.validation_loss, r.record.max_steps or r.lock.training.max_steps)
    parts.append(f"<figure>{_image(png, 'training and validation loss by step')}")
    parts.append(f"<figcaption>train loss logged every {e(r.lock.training.logging_steps)} steps; validation loss "
                 f"at each evaluation ({e(_plural(len(r.validation_loss), 'point'))}), from events.jsonl</figcaption></figure>")
    train, validation = dict(r.train_loss), dict(r.validation_loss)
    rows = [[e(s), e(_fmt(train.get(s))), e(_fmt(validation.get(s)))] for s in sorted(set(train) | set(validation))]
    parts.append(f"<details><summary>the logged values ({_plural(len(rows), 'step')})</summary>{_table(['step', 'train loss', 'validation loss'], rows, {0, 1, 2})}</details>")
    return "".join(parts) + "</section>"


def _spread(summary: dict[str, Any]) -> str:
    spread = summary.get("tokens_per_example")
    if not spread:
        return "no examples"
    return f"min {spread['min']:,}, median {spread['median']:,g}, p95 {spread['p95']:,}, max {spread['max']:,}"


def _lengths(r: Report) -> str:
    max_length = r.lock.data.max_length
    parts = ['<section id="lengths"><h2>Tokens per example</h2>']
    if r.lengths_note:
        parts.append(_note(r.lengths_note))
    for split in r.lengths:
        s = split.summary
        overlong = s["overlong"]
        caption = (
            f"<code>{e(split.file)}</code> ({e(split.name)}): {e(_fmt(s['examples']))} examples, {e(_fmt(s['tokens']))} tokens; "
            f"tokens per example {e(_spread(s))}; max_length {e(max_length)}: "
            f"{e(overlong['error'])} over it, {e(overlong['dropped'])} dropped, {e(overlong['truncated'])} truncated"
        )
        parts.append(f"<figure>{_image(plots.length_histogram(split.name, split.lengths, max_length), f'{split.name}: tokens per example')}")
        parts.append(f"<figcaption>{caption}</figcaption></figure>")
        rows = [[e(f"{b['from']:,}–{b['to']:,}"), e(_fmt(b["examples"]))] for b in s["histogram"]]
        parts.append(f"<details><summary>{e(split.name)}: examples per length bin (as <code>ftc data check</code> prints them)</summary>"
                     f"{_table(['tokens', 'examples'], rows, {1})}</details>")
    return "".join(parts) + "</section>"


def _metrics(evaluation: EvalRecord) -> str:
    metrics = evaluation.metrics
    if not metrics:
        return "<p>no metrics</p>"
    with_reference = any("reference" in m for m in metrics.values())  # what the reference answers score themselves
    columns = baselines.columns(evaluation, _fmt, _delta)  # base (zero-shot), few-shot when asked, tuned, differences
    head = ["metric", *(c[0] for c in columns)] + (["reference answers"] if with_reference else []) + ["note"]
    rows = [
        [f"<code>{e(name)}</code>", *(e(c[1](m)) for c in columns)]
        + ([e(_fmt(m.get("reference")))] if with_reference else [])
        + [e(m.get("note") or "")]
        for name, m in metrics.items()
    ]
    table = _table(head, rows, set(range(1, len(columns) + 1 + with_reference)), "metrics")
    return table + "".join(f"<p>{e(line)}</p>" for line in baselines.summary(evaluation))


def _gates(evaluation: EvalRecord) -> str:
    gates = evaluation.gates
    if not gates:
        return "<h3>Gates</h3><p>the plan sets no gates</p>"
    held = sum(g.holds for g in gates)
    rows = [
        [f"<code>{e(g.gate)}</code>", e(_fmt(g.left)), e(_fmt(g.right)),
         '<span class="pass">pass</span>' if g.holds else '<span class="fail">fail</span>' + (f": {e(g.error)}" if g.error else "")]
        for g in gates
    ]
    verdict = "pass" if held == len(gates) else "fail"
    return (f'<h3>Gates: <span class="{verdict}">{held} of {len(gates)} hold</span></h3>'
            + _table(["gate", "left side", "right side", "result"], rows, {1, 2}, "gates"))


def _diagnosis(evaluation: EvalRecord) -> str:
    findings = evaluation.diagnosis
    parts = ["<h3>Diagnosis</h3>"]
    if findings:
        rows = [[e(f.finding), e(f.evidence), e(f.remedy)] for f in findings]
        parts.append(_table(["finding", "evidence", "remedy"], rows, cls="diagnosis"))
    else:
        parts.append("<p>no findings</p>")
    unchecked = evaluation.not_checked
    if unchecked:
        items = "".join(f"<li>{e(u.finding)}: {e(u.reason)}</li>" for u in unchecked)
        parts.append(f"<p>not checked:</p><ul>{items}</ul>")
    return "".join(parts)


def _lm_eval(evaluation: EvalRecord) -> str:
    tasks = evaluation.lm_eval
    if not tasks:
        return ""
    rows, missing = [], []
    for task, result in tasks.items():
        if result.get("status") != "ok":
            missing.append(f"<li><code>{e(task)}</code>: {e(result.get('status'))}: {e(result.get('reason') or 'no reason given')}</li>")
            continue
        base, tuned = result.get("base") or {}, result.get("tuned") or {}
        examples = result.get("examples")
        note = "; ".join(n for n in (f"{examples:,} examples" if is_number(examples) else "", result.get("reason") or "") if n)
        for metric in sorted(k for k in set(base) | set(tuned) if is_number(base.get(k)) or is_number(tuned.get(k))):
            rows.append([f"<code>{e(task)}</code>", f"<code>{e(metric)}</code>", e(_fmt(base.get(metric))),
                         e(_fmt(tuned.get(metric))), e(_delta(base.get(metric), tuned.get(metric))), e(note)])
    table = _table(["task", "metric", "base", "tuned", "tuned − base", "note"], rows, {2, 3, 4}, "lm-eval") if rows else ""
    return "<h3>lm-eval</h3>" + table + (f"<ul>{''.join(missing)}</ul>" if missing else "")


def _evaluation(r: Report) -> str:
    parts = ['<section id="evaluation"><h2>Evaluation: base versus tuned</h2>']
    if r.evaluation_note:
        parts.append(_note(r.evaluation_note))
    ev = r.evaluation
    if ev is None:
        parts.append(f"<p>no evaluation yet: run <code>ftc eval {e(r.run)}</code></p>")
        return "".join(parts) + "</section>"
    held, decoding = ev.held_out, ev.decoding
    how = "greedy decoding" if decoding.do_sample is False else f"sampling ({decoding.do_sample})"
    parts.append(
        f"<p>{e(_fmt(ev.examples))} held-out examples from <code>{e(held.path or '?')}</code> "
        f"({e(held.source or '?')}); {e(how)}, at most {e(decoding.max_new_tokens or '?')} new tokens, "
        f"from {EVAL}</p>"
    )
    models = ev.models.to_json()
    if models:
        described = "; ".join(f"{side}: {what or 'not evaluated'}" for side, what in models.items())
        parts.append(f"<p>{e(described)}</p>")
    parts += [_metrics(ev), _gates(ev), _diagnosis(ev), _lm_eval(ev)]
    return "".join(parts) + "</section>"


def _parity_row(mode: str, check: ParityCheck) -> list[str]:
    verdict = f'<span class="{"pass" if check.status == "passed" else "fail"}">{e(check.status)}</span>'
    if check.status == "skipped":
        return [e(mode), verdict, "", "", e(check.reason or ""), e(check.checked or "")]
    first = check.first_divergence
    where = "none" if first is None else f"{first.source}: {first.where} token {first.position}"
    dtypes = f"vLLM {check.served_dtype} / transformers {check.reference_dtype}"
    agreed = f"{check.agreeing}/{check.prompts} ({_fmt(check.agreement, '.0%')})"
    return [e(mode), verdict, e(agreed), e(dtypes), e(f"first divergence: {where}; {check.endpoint}, up to {check.max_new_tokens} new tokens"), e(check.checked or "")]


def _served(r: Report) -> str:
    ev = r.served
    local = r.evaluation.metrics if r.evaluation else {}
    parts = [f"<h3>scored through the endpoint ({EVAL_ENDPOINT})</h3>"]
    if r.served_note:
        parts.append(_note(r.served_note))
    facts = ev.endpoint or {}
    same = facts.get("answers_equal_to_local") or {}
    compared = (
        f"{same['equal']}/{same['compared']} served answers equal to {EVAL}'s local ones"
        if same.get("status") == "compared" else f"answers not compared with local ones: {same.get('reason')}"
    )
    parts.append(
        f"<p>{e(ev.models.tuned)}; prompt token ids equal to ftc's rendering: "
        f"{e(facts.get('prompt_ids_match'))}; {e(compared)}</p>"
    )
    if facts.get("first_prompt_mismatch"):
        miss = facts["first_prompt_mismatch"]
        parts.append(_note(f"the server renders prompts differently from the locked chat template from token {miss['at_token']}: "
                           f"ftc {miss['ftc']!r}, served {miss['served']!r}"))
    rows = []
    for name, row in ev.metrics.items():
        mine = local.get(name, {}).get("tuned")
        rows.append([f"<code>{e(name)}</code>", e(_fmt(mine)), e(_fmt(row.get("tuned"))), e(_delta(mine, row.get("tuned")))])
    if rows:
        parts.append(_table(["metric", f"tuned, local ({EVAL})", "tuned, served", "served − local"], rows, {1, 2, 3}, "served"))
    return "".join(parts)


def _exports(r: Report) -> str:
    """run.json "exports": each format `ftc export` wrote, and its gate against merged/."""
    rows = []
    for fmt, x in sorted(r.record.exports.items()):
        g = x.gate
        verdict = f'<span class="{"pass" if x.status == "passed" else "fail"}">{e(x.status)}</span>'
        drops = ", ".join(f"{k} {-v:+.3f}" for k, v in (g.get("metric_drops") or {}).items() if v)  # export − merged/
        rows.append([e(fmt), verdict, e(_fmt(g.get("size_mib"), ".1f")), e(_fmt(g.get("top1_agreement"), ".1%")),
                     e(g.get("answers_identical") or ""), e(drops or "none"), e("; ".join(x.failures) or x.path or "")])
    if not rows:
        return f"<p>no exports: <code>ftc export {e(r.run)}</code> writes GGUF and compressed-tensors copies of merged/</p>"
    head = ["format", "gate", "MiB", "top-1 vs merged/", "answers identical", "metrics, export − merged/", "detail"]
    return "<h3>exports (<code>ftc export</code>, run.json)</h3>" + _table(head, rows, {2, 3}, "exports")


def _serving(r: Report) -> str:
    parts = ['<section id="serving"><h2>Serving</h2>', _exports(r)]
    if r.parity:
        rows = [_parity_row(mode, check) for mode, check in r.parity.items()]
        parts.append("<h3>parity gate (<code>ftc serve</code>, run.json)</h3>")
        parts.append(_table(["mode", "status", "agreeing prompts", "dtypes", "detail", "checked"], rows, {2}, "parity"))
    else:
        parts.append(f"<p>no parity check yet: <code>ftc serve {e(r.run)}</code> runs one before it declares the server ready</p>")
    if r.served is not None:
        parts.append(_served(r))
    elif r.served_note:
        parts.append(_note(r.served_note))
    else:
        parts.append(f"<p>not scored through an endpoint: <code>ftc eval {e(r.run)} --endpoint URL</code> does</p>")
    return "".join(parts) + "</section>"


def _text(value: Any) -> str:
    if value is None:
        return '<span class="empty">(not generated)</span>'
    text = str(value)
    if not text.strip():
        return f'<span class="empty">{"(blank)" if text else "(nothing)"}</span>'
    cut = text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + " …"
    return f"<pre>{e(cut)}</pre>"


def _answers(r: Report) -> str:
    parts = ['<section id="answers"><h2>Answers side by side</h2>']
    if r.answers_note:
        parts.append(_note(r.answers_note))
    if not r.answers:
        parts.append("<p>no answers to show: <code>ftc run</code> writes samples.json, and <code>ftc eval</code> eval.json</p>")
        return "".join(parts) + "</section>"
    parts.append(f"<p>the first {len(r.answers)} of {r.answers_total} held-out examples in {e(r.answers_source)}; "
                 f"texts over {ANSWER_CHARS:,} characters are cut here and whole in the file</p>")
    for i, row in enumerate(r.answers, 1):
        source = f' <span class="muted">{e(row["source"])}</span>' if row.get("source") else ""
        names = ("reference", "base", *(("few_shot",) if "few_shot" in row else ()), "tuned")
        sides = "".join(f"<div><h4>{name.replace('_', '-')}</h4>{_text(row.get(name))}</div>" for name in names)
        parts.append(f'<article class="example"><h3>example {i}{source}</h3>'
                     f'<div class="prompt"><h4>prompt</h4>{_text(row.get("prompt"))}</div><div class="side">{sides}</div></article>')
    return "".join(parts) + "</section>"


def render_html(r: Report) -> str:
    """The page: the same Report gives the same text."""
    from ftc.compiler import __version__

    project = r.record.project or r.lock.project.name
    title = f"ftc report: {project} run {r.record.run_id or Path(r.run).name}"
    rewards = reward_section(r.rewards, r.lock.training.logging_steps, r.record.max_steps or r.lock.training.max_steps, _image, _table)
    body = "\n".join(part for part in [_header(r), _losses(r), rewards, _lengths(r), _evaluation(r), _serving(r), _answers(r)] if part)
    read = [RUN_RECORD, LOCK, EVENTS, EVAL if r.evaluation else None, EVAL_ENDPOINT if r.served else None, r.answers_source]
    sources = ", ".join(dict.fromkeys(name for name in read if name))
    footer = f"<footer>made by <code>ftc report</code> (ftc {e(__version__)}) from {e(sources)} in {e(r.run)}</footer>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n{footer}\n</body>\n</html>\n"
    )
