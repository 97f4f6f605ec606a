"""A run's verbs after training: `ftc eval` scores base against tuned, `ftc report` writes an HTML page."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ftc.cli.common import UsageError, display, err, out, quiet_model_loading, run_folder, step_reporter
from ftc.cli.promote import add_against_options, check_against_options, cmd_eval_against
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS


def add_eval(verbs) -> None:
    p = verbs.add_parser(
        "eval",
        help="score base and tuned side by side on the held-out split, check the gates, diagnose; write RUN/eval.json",
        description=(
            "Generate greedy answers from the base and the tuned model to the run's held-out prompts (locked chat "
            "template, stop tokens, evaluation.max_new_tokens), compute the metrics the spec lists for both, score "
            "the held-out task and evaluation.lm_eval_tasks with lm-eval (offline; a task whose data is not cached is "
            "reported unavailable), check evaluation.gates, diagnose overfitting, underfitting, forgetting, mode "
            "collapse and format inconsistency from the losses and scores, and write everything to RUN/eval.json. "
            "Exit 1 when a gate fails or cannot be checked."
        ),
    )
    p.add_argument(
        "run",
        metavar="RUN",
        help="the run folder, e.g. runs/quickstart/20250101-120000, or a spec (its newest completed run)",
    )
    p.add_argument(
        "--max-examples",
        type=int,
        metavar="N",
        help="evaluate at most N held-out examples (default: evaluation.max_examples, else all)",
    )
    p.add_argument("--json", action="store_true", help="print eval.json instead of the tables")
    p.add_argument(
        "--baselines",
        metavar="NAMES",
        help="prompting baselines to score beside the tuned model, comma-separated: zero_shot (the base as "
        "prompted), few_shot (the base with training examples in the prompt); '' for none "
        "(default: evaluation.baselines). No recompiling needed; eval.json records that they came from here",
    )
    p.add_argument(
        "--few-shot-k",
        type=int,
        metavar="K",
        help="training examples in each few-shot prompt, 1 to 64 (default: evaluation.few_shot_k)",
    )
    p.add_argument(
        "--endpoint",
        metavar="URL",
        help="score the tuned side through this OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1, "
        "started by `ftc serve RUN`) instead of loading it here; writes RUN/eval-endpoint.json and compares its "
        "answers with eval.json's",
    )
    p.add_argument(
        "--endpoint-model",
        metavar="NAME",
        help="the served model name to ask for (default: serve.served_model_name, or the only one served)",
    )
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the endpoint's API key (default: serve.api_key_env; '' for none)",
    )
    add_against_options(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    target = Path(args.run)
    if not target.exists():
        raise UsageError(
            f"not found: {args.run} (give a run folder, such as runs/<name>/<run-id>, or a spec for its newest run)"
        )
    if args.max_examples is not None and args.max_examples < 1:
        raise UsageError("--max-examples must be at least 1")
    if not args.endpoint and (args.endpoint_model or args.api_key_env is not None):
        raise UsageError("--endpoint-model and --api-key-env go with --endpoint URL")
    check_against_options(args)
    if args.against is not None:
        return cmd_eval_against(args, target)
    baselines = _baselines(args)

    from ftc.runtime.evaluate.compare import evaluate_run, print_evaluation, resolve_run
    from ftc.runtime.evaluate.endpoint import EndpointError
    from ftc.runtime.runfolder import RunFolderError

    quiet_model_loading()
    try:
        run_dir = resolve_run(target)
        with err.status("evaluating", spinner="dots") as status:
            step = step_reporter(status)
            endpoint = _open_endpoint(args, run_dir) if args.endpoint else None
            result = evaluate_run(
                run_dir, max_examples=args.max_examples, step=step, endpoint=endpoint, baselines=baselines,
                few_shot_k=args.few_shot_k,
            )
    except (RunFolderError, EndpointError) as exc:
        err.print(f"ftc eval: {exc}", markup=False)
        return EXIT_PROBLEMS
    if args.json:
        out.print(json.dumps(result.record.to_json(), indent=2, ensure_ascii=False), markup=False, soft_wrap=True)
    else:
        print_evaluation(out, result)
        out.print(f"wrote {display(result.path)} in {result.seconds:.0f}s", markup=False)
    failed = [g.gate for g in result.record.gates if not g.holds]
    if failed:
        err.print(f"ftc eval: {len(failed)} gate(s) failed: {'; '.join(failed)}", markup=False)
        return EXIT_PROBLEMS
    return EXIT_OK


def _baselines(args: argparse.Namespace) -> tuple[str, ...] | None:
    """--baselines and --few-shot-k, checked before anything loads."""
    from ftc.runtime.evaluate.baselines import parse_names

    if args.few_shot_k is not None and not 1 <= args.few_shot_k <= 64:
        raise UsageError(f"--few-shot-k must be between 1 and 64, not {args.few_shot_k}")
    if args.baselines is None:
        return None
    try:
        return parse_names(args.baselines)
    except ValueError as exc:
        raise UsageError(f"--baselines: {exc}") from None


def _open_endpoint(args: argparse.Namespace, run_dir: Path):
    """--endpoint, checked before any model loads; the key variable and the model name default to the run's
    serve section."""
    from ftc.runtime.evaluate.endpoint import open_endpoint
    from ftc.runtime.runfolder import run_lock

    serve = run_lock(run_dir).serve
    key_env = args.api_key_env if args.api_key_env is not None else serve.api_key_env
    return open_endpoint(args.endpoint, args.endpoint_model, key_env or None, serve.served_model_name)


def add_report(verbs) -> None:
    p = verbs.add_parser(
        "report",
        help="write RUN_DIR/report.html: loss curves, token lengths, base versus tuned metrics and answers",
        description=(
            "Write one self-contained HTML page about a run (inline CSS, PNG plots inside, no script, nothing "
            "fetched): the run's facts from run.json, train and validation loss by step, tokens per example of each "
            "split against max_length (measured as `ftc data check` does, while the spec, data and model still hash "
            "as the run's lock says), eval.json's metrics base versus tuned with gates, diagnosis and lm-eval when "
            "`ftc eval` has run, and a few answers side by side."
        ),
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", nargs="?", help="the run folder, e.g. runs/quickstart/20250101-120000"
    )
    p.add_argument(
        "--ab", metavar="LOGS",
        help="instead of a run's page, compare the arms of an A/B deployment from the logs of `ftc serve --log` "
        "(requests, share rated good/bad/corrected with 95%% intervals, latency p50/p99, tokens, which arm is ahead "
        "and whether significantly); written to LOGS/ab-report.html unless --output says otherwise",
    )
    p.add_argument("--feedback", metavar="FILE", help="with --ab: the feedback JSONL on the exchanges (verdicts)")
    p.add_argument("--output", metavar="PATH", help="where to write the page (default: RUN_DIR/report.html)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser afterwards")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ftc.compiler.build.lock import LOCK_NAME
    from ftc.runtime.report.page import write_report
    from ftc.runtime.runfolder import RUN_RECORD, RunFolderError

    if args.ab is not None or args.run_dir is None:
        return _report_ab(args)
    if args.feedback:
        raise UsageError("--feedback goes with --ab LOGS")
    run_dir = run_folder(args.run_dir, (RUN_RECORD, LOCK_NAME))
    quiet_model_loading()
    try:
        with err.status("writing the report", spinner="dots") as status:
            step = step_reporter(status, quiet=True)
            path, page = write_report(run_dir, Path(args.output) if args.output else None, step=step)
    except RunFolderError as exc:
        err.print(f"ftc report: {exc}", markup=False)
        return EXIT_PROBLEMS
    for note in page.notes:
        err.print(f"ftc report: note: {note}", markup=False)
    out.print(f"wrote {display(path)}", markup=False)
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return EXIT_OK


def _report_ab(args: argparse.Namespace) -> int:
    """`ftc report --ab LOGS`: the A/B page (runtime/report/ab.py)."""
    from ftc.runtime.exchanges import ExchangeError
    from ftc.runtime.feedback import FeedbackError
    from ftc.runtime.report.ab import ABError, write_ab

    if args.ab is None:
        raise UsageError("give RUN_DIR (a run's page) or --ab LOGS (an A/B deployment's page)")
    if args.run_dir is not None:
        raise UsageError("give RUN_DIR or --ab LOGS, not both")
    logs = Path(args.ab)
    if not logs.exists():
        raise UsageError(f"log folder not found: {args.ab} (give the folder `ftc serve --log` wrote)")
    if args.feedback and not Path(args.feedback).is_file():
        raise UsageError(f"feedback file not found: {args.feedback}")
    try:
        feedback = Path(args.feedback) if args.feedback else None
        path, page = write_ab(logs, feedback, Path(args.output) if args.output else None)
    except (ABError, ExchangeError, FeedbackError) as exc:
        err.print(f"ftc report: {exc}", markup=False)
        return EXIT_PROBLEMS
    out.print(page.verdict, markup=False)
    out.print(f"wrote {display(path)}", markup=False)
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return EXIT_OK
