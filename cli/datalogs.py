"""`ftc data from-logs`: served exchanges and their feedback as a new version of the training data
(runtime/fromlogs.py). `ftc data synthesize`: new examples from a teacher model (runtime/synthesize.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ftc.cli.common import UsageError, display, err, out, progress, spec_path
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS

SHOWN = 20  # dropped exchanges printed before "and N more": the report lists them all


def add_from_logs(actions) -> None:
    p = actions.add_parser(
        "from-logs",
        help="turn served exchanges (ftc serve --log) and their feedback into a new version of the training data",
        description=(
            "Read the exchanges `ftc serve --log` wrote and the feedback on them, and write OUT: the spec's train "
            "records followed by the new examples, a complete data version that data.train can point at. Kept: "
            "corrected answers (the exchange's messages with the correction as the assistant turn) and, with "
            "--keep-good, answers rated good. A bad answer with a correction also becomes a preference pair "
            "(--pairs). Refused: prompts of the spec's held-out split (user turns, case-folded), repeats of train "
            "and of each other, and examples that fail the spec's record and token checks. Exchanges without a "
            "verdict are not kept. Every exchange is listed in the report with its log file:line and id. "
            "A malformed log or feedback line exits 1 naming it, and nothing is written."
        ),
    )
    p.add_argument(
        "logs", metavar="LOGS", help="the log folder of `ftc serve --log`, or one exchanges-NNNNNN.jsonl file"
    )
    p.add_argument("--spec", required=True, help="the spec whose data the examples join, e.g. specs/quickstart.toml")
    p.add_argument(
        "--feedback", metavar="FILE",
        help='feedback JSONL, one {"id", "verdict": "good"|"bad", "correction"?, "note"?} a line (without it, '
        "no exchange has a verdict and none is kept)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the new train file to write (.jsonl; not data.train)")
    p.add_argument("--pairs", metavar="FILE", help="write the preference pairs (prompt, chosen, rejected) to FILE")
    p.add_argument("--keep-good", action="store_true", help="also keep answers rated good, as they were served")
    p.add_argument("--report", metavar="FILE", help="where to write the JSON report (default: OUT.report.json)")
    p.set_defaults(func=cmd_from_logs)


def add_synthesize(actions) -> None:
    from ftc.runtime.synthesize import ATTEMPTS, NEAR_DUPLICATE, PER_REQUEST

    p = actions.add_parser(
        "synthesize",
        help="ask a teacher model (any OpenAI-compatible endpoint) for new examples in the spec's format",
        description=(
            "Show a teacher model K seed examples of the spec's train split (drawn by --seed) through a prompt "
            "template and ask it for new examples, until N pass every check or "
            f"{ATTEMPTS}x the needed requests are made. Each example must pass the spec's record and token checks, "
            "evaluation.json_schema and data.label_field where the spec has them, must not ask a held-out prompt "
            "exactly or nearly (character-trigram Jaccard of the user turns), and must not repeat train or another "
            "example. Writes FILE and FILE.meta.json (teacher, settings, seed examples, every dropped example with "
            "its reason). A teacher that does not answer exits 1 and nothing is written."
        ),
    )
    p.add_argument("spec", help="the spec whose data format and checks the examples follow")
    p.add_argument("--teacher", required=True, metavar="URL", help="the endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--n", required=True, type=int, metavar="N", help="how many examples to keep")
    p.add_argument("--out", required=True, metavar="FILE", help="the .jsonl file to write")
    p.add_argument("--model", metavar="NAME", help="the teacher's model name (default: the one model it serves)")
    p.add_argument(
        "--api-key-env", metavar="VAR", help="environment variable holding the teacher's API key (never written)"
    )
    p.add_argument(
        "--template", metavar="FILE",
        help="a jinja2 prompt template (sandboxed); it gets examples (JSON text), records, n, format, label_field, "
        "labels (default: a built-in one)",
    )
    p.add_argument("--seeds", type=int, default=3, metavar="K", help="seed examples shown per request (default 3)")
    p.add_argument("--per-request", type=int, default=PER_REQUEST, metavar="M",
                   help=f"examples asked for per request (default {PER_REQUEST})")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T", help="sampling temperature (default 1.0)")
    p.add_argument("--max-tokens", type=int, default=2048, metavar="N", help="the teacher's budget per answer")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the seed examples' draw (default 0)")
    p.add_argument(
        "--near-duplicate", type=float, default=NEAR_DUPLICATE, metavar="X",
        help=f"trigram Jaccard similarity to a held-out prompt that drops an example (default {NEAR_DUPLICATE})",
    )
    p.set_defaults(func=cmd_synthesize)


def _out_path(value: str, flag: str) -> Path:
    path = Path(value)
    if path.suffix != ".jsonl":
        raise UsageError(f"{flag} {value}: the examples are JSON Lines; name the file .jsonl")
    if path.is_dir():
        raise UsageError(f"{flag} {value} is a folder; give a file to write")
    return path


def _open(spec: str):
    from ftc.runtime.specdata import Checker, SpecDataError, open_spec

    path = spec_path(spec)
    try:
        with err.status("reading the spec's data", spinner="dots"):
            data = open_spec(path, Path.cwd())
            checker = Checker.of(data)
    except SpecDataError as exc:
        err.print(str(exc), markup=False)
        return None, None
    if checker.note:
        err.print(f"note: {checker.note}", markup=False)
    return data, checker


def cmd_from_logs(args: argparse.Namespace) -> int:
    from ftc.compiler.atomic import write_atomic
    from ftc.compiler.data.clean import jsonl
    from ftc.runtime.exchanges import ExchangeError
    from ftc.runtime.feedback import FeedbackError
    from ftc.runtime.fromlogs import data_version, from_logs

    logs, target = Path(args.logs), _out_path(args.out, "--out")
    pairs = _out_path(args.pairs, "--pairs") if args.pairs else None
    if not logs.exists():
        raise UsageError(f"log folder not found: {args.logs} (give the folder `ftc serve --log` wrote)")
    if args.feedback and not Path(args.feedback).is_file():
        raise UsageError(f"feedback file not found: {args.feedback}")
    data, checker = _open(args.spec)
    if data is None:
        return EXIT_PROBLEMS
    if target.exists() and target.resolve() == data.train_path:
        raise UsageError(f"--out {args.out} is the spec's data.train; write a new file and point data.train at it")
    try:
        done = from_logs(logs, data, Path(args.feedback) if args.feedback else None, args.keep_good, checker)
    except (ExchangeError, FeedbackError) as exc:
        err.print(f"ftc data from-logs: {exc}; nothing written", markup=False)
        return EXIT_PROBLEMS
    report_path = Path(args.report) if args.report else Path(f"{target}.report.json")
    write_atomic(target, data_version(data, done.examples))
    if pairs is not None:
        write_atomic(pairs, jsonl(done.pairs))
    report = done.report(target, pairs, len(data.train))
    write_atomic(report_path, json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    _print_from_logs(done, report)
    out.print(
        f"wrote {display(target)}: {len(data.train):,} train record(s) + {len(done.examples):,} new"
        + (f"; {display(pairs)}: {len(done.pairs):,} pair(s)" if pairs is not None else "")
        + f"; report {display(report_path)}",
        markup=False,
    )
    return EXIT_OK


def _print_from_logs(done, report: dict) -> None:
    c = report["counts"]
    out.print(
        f"{c['exchanges']:,} exchange(s): {c['kept']:,} kept ({c['corrected']:,} corrected, {c['kept_good']:,} "
        f"rated good), {c['dropped']:,} dropped; {c['pairs']:,} preference pair(s); "
        f"{c['redacted_kept']:,} kept example(s) had redacted text",
        markup=False,
    )
    for reason, count in c["dropped_by_reason"].items():
        out.print(f"  dropped, {reason}: {count:,}", markup=False)
    shown = [e for e in done.entries if e.action == "dropped" and not e.reason.startswith(("no verdict", "rated"))]
    for e in shown[:SHOWN]:
        err.print(f"{e.file}:{e.line}: {e.id}: {e.reason}", markup=False)
    if len(shown) > SHOWN:
        err.print(f"... and {len(shown) - SHOWN:,} more: the report lists every exchange", markup=False)
    for drop in done.pair_drops:
        err.print(f"{drop['file']}:{drop['line']}: {drop['id']}: no pair: {drop['reason']}", markup=False)
    for warning in done.warnings:
        err.print(f"warning: {warning}", markup=False)


def cmd_synthesize(args: argparse.Namespace) -> int:
    from jinja2 import TemplateError

    from ftc.compiler.atomic import write_atomic
    from ftc.compiler.data.clean import jsonl
    from ftc.runtime.synthesize import META_SUFFIX, Settings, TeacherError, api_key, synthesize

    target = _out_path(args.out, "--out")
    for flag, value, low in (("--n", args.n, 1), ("--seeds", args.seeds, 1), ("--per-request", args.per_request, 1)):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}")
    if not 0 < args.near_duplicate <= 1:
        raise UsageError("--near-duplicate is a similarity between 0 (exclusive) and 1")
    if not args.teacher.startswith(("http://", "https://")):
        raise UsageError(f"--teacher {args.teacher}: give the endpoint's http(s) URL, e.g. http://127.0.0.1:8000/v1")
    key = api_key(args.api_key_env)
    if args.api_key_env and key is None:
        raise UsageError(f"--api-key-env {args.api_key_env}: the variable is not set")
    settings = Settings(
        args.teacher, args.model, args.n, args.seeds, args.temperature, args.max_tokens, args.seed,
        per_request=args.per_request, near_duplicate=args.near_duplicate, api_key=key,
    )
    if args.template:
        template = Path(args.template)
        if not template.is_file():
            raise UsageError(f"template not found: {args.template}")
        settings.template, settings.template_name = template.read_text(encoding="utf-8"), display(template)
    data, checker = _open(args.spec)
    if data is None:
        return EXIT_PROBLEMS
    bar, tick = progress()
    try:
        with bar:
            done = synthesize(settings, data, checker, tick(f"asking {args.teacher}", None))
    except TeacherError as exc:
        err.print(f"ftc data synthesize: the teacher did not answer: {exc}; nothing written", markup=False)
        return EXIT_PROBLEMS
    except TemplateError as exc:  # a template that does not render, or that the sandbox refuses
        err.print(f"ftc data synthesize: {settings.template_name}: the template does not render: {exc}", markup=False)
        return EXIT_PROBLEMS
    meta = Path(f"{target}{META_SUFFIX}")
    write_atomic(target, jsonl(done.examples))
    write_atomic(meta, json.dumps(done.meta(settings, data), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    for drop in done.dropped[:SHOWN]:
        err.print(f"request {drop['request']}, item {drop['item']}: {drop['reason']}", markup=False)
    if len(done.dropped) > SHOWN:
        err.print(f"... and {len(done.dropped) - SHOWN:,} more: {display(meta)} lists them all", markup=False)
    if len(done.examples) < args.n:
        err.print(f"warning: kept {len(done.examples)} of the {args.n} asked for after {len(done.requests)} "
                  "request(s); ask again with another --seed, or loosen the template", markup=False)
    out.print(f"wrote {display(target)}: {len(done.examples):,} example(s) from {done.model} in "
              f"{len(done.requests)} request(s), {len(done.dropped):,} dropped; {display(meta)}", markup=False)
    return EXIT_OK
