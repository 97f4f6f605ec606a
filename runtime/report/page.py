"""`ftc report RUN`: one self-contained HTML page about a run, RUN/report.html by default.

The page reads only what the run folder holds, plus the project's spec and data for the token lengths:
  - the header: run.json (status, device, dates, steps, final losses, tokens/s, peak memory, sessions, the merge
    verification, versions) and the run's ftc.lock.json (plan hash, model, method, data);
  - the loss curves: the "log" events of events.jsonl (train "loss" and "eval_loss" by step). A resumed session
    restarts from its checkpoint's step, so the points an earlier session logged after that step are dropped,
    as the run dropped the training behind them;
  - the token lengths: measured again as `ftc data check` measures them (compiler/datacheck.py), but only while
    the spec, the data and the model still hash as the run's lock records and the counts agree with the lock's;
    otherwise the page says what changed rather than plotting other data;
  - the evaluation: eval.json (written by `ftc eval RUN`): metrics base versus tuned, gates, diagnosis, lm-eval;
  - serving: the parity checks `ftc serve` recorded in run.json (one per mode: merged, adapter), and
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
import json
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler.hashing import FileHasher
from ftc.compiler.build.lock import plan_hash, write_atomic

from ftc.runtime.report import plots
from ftc.runtime.runfolder import RunFolderError, read_events, read_record, run_lock

REPORT = "report.html"
EVAL_RECORD = "eval.json"  # written by `ftc eval RUN`
EVAL_ENDPOINT_RECORD = "eval-endpoint.json"  # written by `ftc eval RUN --endpoint URL`
EVAL_FORMAT = 1
SAMPLES_RECORD = "samples.json"  # written by `ftc run` (runtime/samples.py)
ANSWERS_SHOWN = 5
ANSWER_CHARS = 2000  # per text on the page; the JSON files keep them whole


@dataclass(frozen=True)
class SplitLengths:
    """Tokens per example of one split, as `ftc data check` measures them."""

    name: str
    file: str  # the data file, relative to the project root, as the lock names it
    lengths: tuple[int, ...]
    summary: dict[str, Any]  # datacheck's SplitReport.as_dict(): spread, histogram, overlong counts


@dataclass(frozen=True)
class Report:
    """Everything the page shows, gathered from a run folder."""

    run: str  # the run folder as the page names it: relative to the project root when it lies below it
    record: dict[str, Any]
    lock: dict[str, Any]
    plan_hash: str
    train_loss: tuple[tuple[int, float], ...]
    validation_loss: tuple[tuple[int, float], ...]
    lengths: tuple[SplitLengths, ...]
    lengths_note: str | None  # why there is no histogram
    evaluation: dict[str, Any] | None
    evaluation_note: str | None  # eval.json unreadable, or made for another plan
    answers: tuple[dict[str, Any], ...]
    answers_source: str | None  # EVAL_RECORD or SAMPLES_RECORD
    answers_total: int
    answers_note: str | None
    parity: dict[str, dict[str, Any]]  # mode -> the parity record `ftc serve` left in run.json
    served: dict[str, Any] | None  # eval-endpoint.json
    served_note: str | None

    @property
    def notes(self) -> list[str]:
        return [n for n in (self.lengths_note, self.evaluation_note, self.answers_note, self.served_note) if n]


# ---- gathering ------------------------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def loss_points(events: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, loss) and (step, eval_loss) in step order, as the run's surviving sessions logged them."""
    train: dict[int, float] = {}
    validation: dict[int, float] = {}
    for event in events:
        kind, step = event.get("event"), event.get("step")
        if not isinstance(step, int):
            continue
        if kind == "train_begin":  # a session (re)starts at `step`: what was logged beyond it was trained again
            for points in (train, validation):
                for later in [s for s in points if s > step]:
                    del points[later]
        elif kind == "log":
            if _number(event.get("loss")):
                train[step] = float(event["loss"])
            if _number(event.get("eval_loss")):
                validation[step] = float(event["eval_loss"])
    return sorted(train.items()), sorted(validation.items())


def _root(run_dir: Path, record: dict[str, Any]) -> Path:
    # runs live at <root>/runs/<name>/<id>; run.json names the root (as models.open_run reads it)
    return Path(record["root"]) if record.get("root") else run_dir.resolve().parents[2]


def _shown_run(run_dir: Path, root: Path) -> str:
    try:
        return run_dir.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(run_dir.resolve())


def _changed_inputs(run_dir: Path, root: Path, lock: dict[str, Any]) -> list[str]:
    """The inputs that token lengths depend on and that no longer hash as the run's lock records."""
    from ftc.runtime.models import RunFolder, check_base_unchanged

    inputs = lock["inputs"]
    files = [inputs["spec"]] + [inputs["data"][split] for split in sorted(inputs["data"])]
    changed = []
    with FileHasher() as hasher:
        for entry in files:
            path = root / entry["path"]
            if not path.is_file():
                changed.append(f"{entry['path']} is gone")
            elif hasher.sha256(path) != entry["sha256"]:
                changed.append(f"{entry['path']} changed since this run (its sha256 is not the one in the run's ftc.lock.json)")
    try:
        check_base_unchanged(RunFolder(run_dir, root, lock))
    except RunFolderError as exc:
        changed.append(str(exc))
    return changed


def token_lengths(run_dir: Path, root: Path, lock: dict[str, Any]) -> tuple[tuple[SplitLengths, ...], str | None]:
    """Each split's tokens per example, measured by `ftc data check` on the run's spec; or why they are not."""
    from ftc.compiler.data.check import check_data, token_errors

    spec = lock["inputs"]["spec"]["path"]
    changed = _changed_inputs(run_dir, root, lock)
    if changed:
        return (), f"token lengths not drawn, as they would describe other data than this run trained on: {'; '.join(changed)}"
    try:
        report = check_data(root / spec, root)
    except (OSError, ValueError) as exc:
        return (), f"token lengths not drawn: `ftc data check {spec}` failed: {exc}"
    locked = lock["data"]["splits"]
    if not report.splits:
        problems = [str(p) for p in report.problems] + [d.headline() for d in report.diagnostics if d.is_error]
        return (), f"token lengths not drawn: `ftc data check {spec}` measured nothing: {'; '.join(problems[:3]) or 'no data'}"
    out = []
    for split in report.splits:
        expected = locked.get(split.name, {})
        now = (split.stats.examples, split.stats.tokens)
        if now != (expected.get("examples"), expected.get("tokens")):
            return (), (
                f"token lengths not drawn: `ftc data check {spec}` now counts {now[0]:,} examples and {now[1]:,} tokens "
                f"in {split.name}, and the run's plan counted {expected.get('examples')} and {expected.get('tokens')} "
                "(the compiler or its tokenizer changed since the run)"
            )
        file = lock["inputs"]["data"].get(split.name, lock["inputs"]["data"].get("train", {})).get("path", split.file)
        summary = split.as_dict(report.max_length, report.packing_strategy)
        out.append(SplitLengths(split.name, file, tuple(sorted(split.stats.lengths)), summary))
    errors = token_errors(report.splits)
    return tuple(out), ("; ".join(errors) if errors else None)


def read_evaluation(run_dir: Path, plan: str, run: str, name: str = EVAL_RECORD) -> tuple[dict[str, Any] | None, str | None]:
    """eval.json (or eval-endpoint.json) when there is a readable one, and a note when it is unreadable or made
    for another plan."""
    path = run_dir / name
    again = f"ftc eval {run}" + (" --endpoint URL" if name == EVAL_ENDPOINT_RECORD else "")
    if not path.is_file():
        return None, None
    try:
        evaluation = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return None, f"{name} is not valid JSON ({exc}); run `{again}` again"
    if not isinstance(evaluation, dict) or evaluation.get("format_version") != EVAL_FORMAT:
        version = evaluation.get("format_version") if isinstance(evaluation, dict) else None
        return None, f"{name} has format_version {version!r}; this ftc reads version {EVAL_FORMAT}: run `{again}` again"
    made_for = evaluation.get("plan_hash")
    if made_for and made_for != plan:
        return evaluation, f"{name} was made for plan sha256:{made_for[:12]}, and this run's plan is sha256:{plan[:12]}"
    return evaluation, None


def parity_checks(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """run.json's serve.parity by mode (an older run.json kept one record, which names its mode)."""
    parity = (record.get("serve") or {}).get("parity") or {}
    if "status" in parity:
        return {parity.get("mode") or "merged": parity}
    return {mode: check for mode, check in sorted(parity.items()) if isinstance(check, dict)}


def read_answers(run_dir: Path, evaluation: dict[str, Any] | None) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """The answers to show: eval.json's when it has some, else samples.json's; with their file and a note."""
    if evaluation and evaluation.get("answers"):
        return list(evaluation["answers"]), EVAL_RECORD, None
    path = run_dir / SAMPLES_RECORD
    if not path.is_file():
        return [], None, None
    try:
        samples = json.loads(path.read_text(encoding="utf-8")).get("samples") or []
    except (ValueError, AttributeError) as exc:
        return [], None, f"{SAMPLES_RECORD} is unreadable ({exc})"
    return list(samples), SAMPLES_RECORD, None


def gather_report(run_dir: Path, step: Callable[[str], None] = lambda label: None) -> Report:
    """Read a run folder (and, for token lengths, its project's spec and data). Raises RunFolderError."""
    record = read_record(run_dir)
    lock = run_lock(run_dir)
    root = _root(run_dir, record)
    run = _shown_run(run_dir, root)
    plan = record.get("plan_sha256") or plan_hash(lock)
    train, validation = loss_points(read_events(run_dir))
    step("measuring token lengths (as `ftc data check` does)")
    lengths, lengths_note = token_lengths(run_dir, root, lock)
    evaluation, evaluation_note = read_evaluation(run_dir, plan, run)
    answers, source, answers_note = read_answers(run_dir, evaluation)
    served, served_note = read_evaluation(run_dir, plan, run, EVAL_ENDPOINT_RECORD)
    return Report(
        run=run,
        record=record,
        lock=lock,
        plan_hash=plan,
        train_loss=tuple(train),
        validation_loss=tuple(validation),
        lengths=lengths,
        lengths_note=lengths_note,
        evaluation=evaluation,
        evaluation_note=evaluation_note,
        answers=tuple(answers[:ANSWERS_SHOWN]),
        answers_source=source,
        answers_total=len(answers),
        answers_note=answers_note,
        parity=parity_checks(record),
        served=served,
        served_note=served_note,
    )


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
    if not _number(value):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return format(value, spec) if math.isfinite(value) else str(value)


def _delta(base: Any, tuned: Any) -> str:
    if not (_number(base) and _number(tuned)):
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


def _device(device: dict[str, Any] | None) -> str:
    if not device:
        return "not recorded"
    parts = [device.get("precision")]
    if device.get("kind") == "cpu" and device.get("threads"):
        parts.append(f"{device['threads']} threads")
    if device.get("count"):
        parts.append(f"{device['count']} device(s)")
    name = device.get("name") or device.get("kind")
    kind = device.get("kind")
    label = name if name == kind else f"{kind}: {name}"
    return f"{label} ({', '.join(str(p) for p in parts if p)})"


def _merge(merge: dict[str, Any] | None, run: str) -> str:
    """The merge verification of run.json, as HTML."""
    if not merge:
        return f"not merged yet: <code>ftc merge {e(run)}</code>"
    status = merge.get("status")
    if status == "verified" or status == "failed":
        top1 = merge.get("top1_agreement")
        top1 = f"{top1:.1%}" if _number(top1) else "–"
        return e(
            f"{status}: max |Δlogit| {_fmt(merge.get('max_abs_logit_diff'), '.3g')}, mean {_fmt(merge.get('mean_abs_logit_diff'), '.3g')}, "
            f"top-1 agreement {top1} over {merge.get('positions')} positions of {merge.get('examples')} examples ({merge.get('dtype')}), "
            f"in {merge.get('path')}/"
        )
    return e(f"{status}: {merge.get('reason', '')}".rstrip(": "))


def _method(lock: dict[str, Any]) -> str:
    method = lock["method"]
    parts = [method["kind"]]
    if method.get("adapter") == "lora":
        parts.append(f"r {method.get('r')}, lora_alpha {method.get('lora_alpha')}")
    trainable, total = method.get("trainable_params"), method.get("total_params")
    if _number(trainable) and _number(total) and total:
        parts.append(f"{trainable:,} of {total:,} parameters trained ({trainable / total:.2%})")
    return "; ".join(parts)


def _data(lock: dict[str, Any]) -> str:
    splits = lock["data"]["splits"]
    listed = [
        f"{name} {_fmt(s.get('examples'))} examples ({_fmt(s.get('tokens'))} tokens, longest {_fmt(s.get('longest'))})"
        for name, s in sorted(splits.items(), key=lambda kv: (kv[0] != "train", kv[0]))
    ]
    return f"{'; '.join(listed)}; max_length {lock['data']['max_length']}"


def _sessions(record: dict[str, Any]) -> str:
    sessions = record.get("sessions") or []
    if not sessions:
        return "not recorded"
    lines = []
    for i, s in enumerate(sessions, 1):
        steps = f"steps {s.get('first_step')}–{s.get('last_step')}" if s.get("last_step") is not None else "no steps"
        resumed = f", resumed from {s['resumed_from']}" if s.get("resumed_from") else ""
        lines.append(f"{i}. {s.get('started', '?')} to {s.get('ended', '?')}: {s.get('status', 'running')}, {steps}{resumed}")
    return "<br>".join(e(line) for line in lines)


def _header(r: Report) -> str:
    rec, lock = r.record, r.lock
    project = rec.get("project") or lock["project"]["name"]
    run_id = rec.get("run_id") or Path(r.run).name
    last_train = r.train_loss[-1][1] if r.train_loss else None
    last_validation = r.validation_loss[-1][1] if r.validation_loss else None
    train_loss = rec.get("train_loss", last_train)
    eval_loss = rec.get("eval_loss", last_validation)
    max_steps = _fmt(rec.get("max_steps", lock["training"]["max_steps"]))
    steps = f"{_fmt(rec['step'])} of {max_steps}" if _number(rec.get("step")) else f"not recorded (of {max_steps})"
    if rec.get("early_stopped"):
        steps += f" (stopped early: the validation loss stopped improving; final/ holds {rec.get('best_checkpoint')})"
    memory = rec.get("peak_memory_gib")
    packages = rec.get("packages") or {}
    versions = "; ".join(
        part for part in (f"ftc {rec['ftc_version']}" if rec.get("ftc_version") else "", ", ".join(f"{k} {v}" for k, v in sorted(packages.items()) if v)) if part
    ) or "not recorded"
    facts = [
        ("status", e(rec.get("status", "not recorded"))),
        ("plan", f'<span class="hash">sha256:{e(r.plan_hash)}</span>'),
        ("spec", f"<code>{e(rec.get('spec') or lock['inputs']['spec']['path'])}</code>"),
        ("base model", f"<code>{e(lock['inputs']['model']['reference'])}</code>"),
        ("method", e(_method(lock))),
        ("data", e(_data(lock))),
        ("device", e(_device(rec.get("device")))),
        ("started", e(rec.get("started", "not recorded"))),
        ("ended", e(rec.get("ended", "not recorded"))),
        ("steps", e(steps)),
        ("final train loss", e(_fmt(train_loss))),
        ("final validation loss", e(_fmt(eval_loss) if eval_loss is not None else "none (no validation data)")),
        ("tokens/s", e(_fmt(rec.get("tokens_per_second"), ",.0f"))),
        ("peak memory", e(f"{memory:.2f} GiB ({rec.get('peak_memory_kind')})" if _number(memory) else "not reported")),
        ("sessions", _sessions(rec)),
        ("merge", _merge(rec.get("merge"), r.run)),
        ("versions", e(versions)),
    ]
    if rec.get("version_drift"):
        facts.append(("version drift", "<br>".join(e(d) for d in rec["version_drift"])))
    rows = "".join(f"<tr><th>{e(label)}</th><td>{value}</td></tr>" for label, value in facts)
    return (
        f"<header><h1>{e(project)} <span class=\"muted\">run {e(run_id)}</span></h1>"
        f'<p class="sub">ftc report of <code>{e(r.run)}</code></p><table class="facts">{rows}</table></header>'
    )


def _losses(r: Report) -> str:
    parts = ['<section id="loss"><h2>Loss</h2>']
    if not (r.train_loss or r.validation_loss):
        parts.append(_note("no loss was logged (events.jsonl has no \"log\" event with a loss); the run logs every "
                           f"{r.lock['training'].get('logging_steps')} steps"))
        return "".join(parts) + "</section>"
    png = plots.loss_curves(r.train_loss, r.validation_loss, r.record.get("max_steps") or r.lock["training"]["max_steps"])
    parts.append(f"<figure>{_image(png, 'training and validation loss by step')}")
    parts.append(f"<figcaption>train loss logged every {e(r.lock['training'].get('logging_steps'))} steps; validation loss "
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
    max_length = r.lock["data"]["max_length"]
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


def _metrics(evaluation: dict[str, Any]) -> str:
    metrics = evaluation.get("metrics") or {}
    if not metrics:
        return "<p>no metrics</p>"
    with_reference = any("reference" in m for m in metrics.values())  # what the reference answers score themselves
    head = ["metric", "base", "tuned", "tuned − base"] + (["reference answers"] if with_reference else []) + ["note"]
    rows = [
        [f"<code>{e(name)}</code>", e(_fmt(m.get("base"))), e(_fmt(m.get("tuned"))), e(_delta(m.get("base"), m.get("tuned")))]
        + ([e(_fmt(m.get("reference")))] if with_reference else [])
        + [e(m.get("note") or "")]
        for name, m in metrics.items()
    ]
    return _table(head, rows, {1, 2, 3, 4} if with_reference else {1, 2, 3}, "metrics")


def _gates(evaluation: dict[str, Any]) -> str:
    gates = evaluation.get("gates") or []
    if not gates:
        return "<h3>Gates</h3><p>the plan sets no gates</p>"
    held = sum(bool(g.get("holds")) for g in gates)
    rows = [
        [f"<code>{e(g.get('gate'))}</code>", e(_fmt(g.get("left"))), e(_fmt(g.get("right"))),
         '<span class="pass">pass</span>' if g.get("holds") else '<span class="fail">fail</span>' + (f": {e(g['error'])}" if g.get("error") else "")]
        for g in gates
    ]
    verdict = "pass" if held == len(gates) else "fail"
    return (f'<h3>Gates: <span class="{verdict}">{held} of {len(gates)} hold</span></h3>'
            + _table(["gate", "left side", "right side", "result"], rows, {1, 2}, "gates"))


def _diagnosis(evaluation: dict[str, Any]) -> str:
    findings = evaluation.get("diagnosis") or []
    parts = ["<h3>Diagnosis</h3>"]
    if findings:
        rows = [[e(f.get("finding", "")), e(f.get("evidence", "")), e(f.get("remedy", ""))] for f in findings]
        parts.append(_table(["finding", "evidence", "remedy"], rows, cls="diagnosis"))
    else:
        parts.append("<p>no findings</p>")
    unchecked = evaluation.get("not_checked") or []
    if unchecked:
        items = "".join(f"<li>{e(u.get('finding', ''))}: {e(u.get('reason', ''))}</li>" for u in unchecked)
        parts.append(f"<p>not checked:</p><ul>{items}</ul>")
    return "".join(parts)


def _lm_eval(evaluation: dict[str, Any]) -> str:
    tasks = evaluation.get("lm_eval") or {}
    if not tasks:
        return ""
    rows, missing = [], []
    for task, result in tasks.items():
        if result.get("status") != "ok":
            missing.append(f"<li><code>{e(task)}</code>: {e(result.get('status'))}: {e(result.get('reason') or 'no reason given')}</li>")
            continue
        base, tuned = result.get("base") or {}, result.get("tuned") or {}
        examples = result.get("examples")
        note = "; ".join(n for n in (f"{examples:,} examples" if _number(examples) else "", result.get("reason") or "") if n)
        for metric in sorted(k for k in set(base) | set(tuned) if _number(base.get(k)) or _number(tuned.get(k))):
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
    held = ev.get("held_out") or {}
    decoding = ev.get("decoding") or {}
    how = "greedy decoding" if decoding.get("do_sample") is False else f"sampling ({decoding.get('do_sample')})"
    parts.append(
        f"<p>{e(_fmt(ev.get('examples')))} held-out examples from <code>{e(held.get('path', '?'))}</code> "
        f"({e(held.get('source', '?'))}); {e(how)}, at most {e(decoding.get('max_new_tokens', '?'))} new tokens, "
        f"from {EVAL_RECORD}</p>"
    )
    models = ev.get("models") or {}
    if models:
        described = "; ".join(f"{side}: {what or 'not evaluated'}" for side, what in models.items())
        parts.append(f"<p>{e(described)}</p>")
    parts += [_metrics(ev), _gates(ev), _diagnosis(ev), _lm_eval(ev)]
    return "".join(parts) + "</section>"


def _parity_row(mode: str, check: dict[str, Any]) -> list[str]:
    verdict = f'<span class="{"pass" if check.get("status") == "passed" else "fail"}">{e(check.get("status", "?"))}</span>'
    if check.get("status") == "skipped":
        return [e(mode), verdict, "", "", e(check.get("reason") or ""), e(check.get("checked", ""))]
    first = check.get("first_divergence")
    where = "none" if first is None else f"{first.get('source')}: {first.get('in')} token {first.get('position')}"
    dtypes = f"vLLM {check.get('served_dtype')} / transformers {check.get('reference_dtype')}"
    agreed = f"{check.get('agreeing')}/{check.get('prompts')} ({_fmt(check.get('agreement'), '.0%')})"
    return [e(mode), verdict, e(agreed), e(dtypes), e(f"first divergence: {where}; {check.get('endpoint')}, up to {check.get('max_new_tokens')} new tokens"), e(check.get("checked", ""))]


def _served(r: Report) -> str:
    ev = r.served
    local = r.evaluation or {}
    parts = [f"<h3>scored through the endpoint ({EVAL_ENDPOINT_RECORD})</h3>"]
    if r.served_note:
        parts.append(_note(r.served_note))
    facts = ev.get("endpoint") or {}
    same = facts.get("answers_equal_to_local") or {}
    compared = (
        f"{same['equal']}/{same['compared']} served answers equal to {EVAL_RECORD}'s local ones"
        if same.get("status") == "compared" else f"answers not compared with local ones: {same.get('reason')}"
    )
    parts.append(
        f"<p>{e((ev.get('models') or {}).get('tuned'))}; prompt token ids equal to ftc's rendering: "
        f"{e(facts.get('prompt_ids_match'))}; {e(compared)}</p>"
    )
    if facts.get("first_prompt_mismatch"):
        miss = facts["first_prompt_mismatch"]
        parts.append(_note(f"the server renders prompts differently from the locked chat template from token {miss['at_token']}: "
                           f"ftc {miss['ftc']!r}, served {miss['served']!r}"))
    rows = []
    for name, row in (ev.get("metrics") or {}).items():
        mine = (local.get("metrics") or {}).get(name, {}).get("tuned")
        rows.append([f"<code>{e(name)}</code>", e(_fmt(mine)), e(_fmt(row.get("tuned"))), e(_delta(mine, row.get("tuned")))])
    if rows:
        parts.append(_table(["metric", f"tuned, local ({EVAL_RECORD})", "tuned, served", "served − local"], rows, {1, 2, 3}, "served"))
    return "".join(parts)


def _serving(r: Report) -> str:
    parts = ['<section id="serving"><h2>Serving</h2>']
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
        sides = "".join(f"<div><h4>{name}</h4>{_text(row.get(name))}</div>" for name in ("reference", "base", "tuned"))
        parts.append(f'<article class="example"><h3>example {i}{source}</h3>'
                     f'<div class="prompt"><h4>prompt</h4>{_text(row.get("prompt"))}</div><div class="side">{sides}</div></article>')
    return "".join(parts) + "</section>"


def render_html(r: Report) -> str:
    """The page: the same Report gives the same text."""
    from ftc.compiler import __version__

    project = r.record.get("project") or r.lock["project"]["name"]
    title = f"ftc report: {project} run {r.record.get('run_id') or Path(r.run).name}"
    body = "\n".join([_header(r), _losses(r), _lengths(r), _evaluation(r), _serving(r), _answers(r)])
    read = ["run.json", "ftc.lock.json", "events.jsonl", EVAL_RECORD if r.evaluation else None, EVAL_ENDPOINT_RECORD if r.served else None, r.answers_source]
    sources = ", ".join(dict.fromkeys(name for name in read if name))
    footer = f"<footer>made by <code>ftc report</code> (ftc {e(__version__)}) from {e(sources)} in {e(r.run)}</footer>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n{footer}\n</body>\n</html>\n"
    )
