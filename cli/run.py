"""`ftc run`: check a build against its inputs and the device, then run its script with live progress."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ftc.cli.common import UsageError, compile_or_report, display, err, out, quiet_model_loading
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS

if TYPE_CHECKING:
    from ftc.runtime.runfolder import RunRecord

LATEST = "latest"  # --resume without a folder: the newest run of this build


def add_run(verbs) -> None:
    p = verbs.add_parser(
        "run",
        help="run a compiled build (refuses a stale or edited one)",
        description=(
            "Check the build against its spec, data, model, templates and package pins, and the device, without "
            "loading weights; then run its script into runs/<name>/<run-id>/ with live progress, and record the "
            "outcome in run.json. Ctrl-C saves a checkpoint at the end of the step and stops (exit 130); a second "
            "Ctrl-C stops at once. Exit statuses: 0 completed, 1 refused or failed, 2 usage error, 3 out of memory, "
            "4 disk full, 130 interrupted, 128+N the script was killed by signal N."
        ),
    )
    p.add_argument("target", help="the spec file, or its build folder build/<name>/")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        nargs="?",
        const=LATEST,
        help="continue a run from its last complete checkpoint: RUN_DIR, or the newest run of this build when omitted",
    )
    p.add_argument(
        "--allow-version-drift",
        action="store_true",
        help="run even when installed packages differ from the lock's pins (recorded in run.json)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=3,
        metavar="N",
        help="after training, print base versus tuned answers on N held-out examples (0: none; default 3)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="check the whole pipeline first: compile build/<name>-smoke/, train a few steps on the first examples "
        "into runs/<name>-smoke/, evaluate a few held-out examples, and estimate the real run's time; the real "
        "build and runs are not touched (exit 1 names the stage that failed)",
    )
    p.add_argument(
        "--smoke-steps",
        type=int,
        default=None,
        metavar="N",
        help="with --smoke: the steps to train (default 4)",
    )
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if not target.exists():
        raise UsageError(f"not found: {args.target} (give a spec file or a build folder)")
    if not target.is_dir() and target.suffix != ".toml":
        raise UsageError(
            f"{args.target} is neither a spec (.toml) nor a build folder; give the spec, or its build/<name>/ folder"
        )
    if args.samples < 0:
        raise UsageError("--samples must be 0 or more")
    if args.smoke_steps is not None and not args.smoke:
        raise UsageError("--smoke-steps goes with --smoke")
    if args.smoke:
        from ftc.cli.smoke import cmd_smoke

        return cmd_smoke(args, target)

    from ftc.runtime.run.execute import (
        RunRefused,
        check_current,
        check_device,
        check_resumable,
        execute,
        latest_run,
        locate,
        locked_plan_hash,
        new_run_dir,
    )
    from ftc.runtime.run.progress import RunDisplay

    try:
        where = locate(target)
        build, drift = check_current(
            where,
            recompile=lambda: compile_or_report(str(where.spec), root=where.root),
            allow_version_drift=args.allow_version_drift,
        )
        device = check_device(build.lock)
        run_dir = None
        if args.resume is not None:
            run_dir = latest_run(build) if args.resume == LATEST else Path(args.resume)
            check_resumable(build, run_dir)
    except RunRefused as exc:
        err.print(f"ftc run: refused: {exc}", markup=False)
        return EXIT_PROBLEMS
    for line in drift:
        err.print(f"ftc run: warning: version drift: {line}", markup=False)
    run_dir = run_dir or new_run_dir(build)
    verb = "resuming" if args.resume is not None else "running"
    plan = f"plan sha256:{locked_plan_hash(build)[:12]}"
    out.print(f"{verb} {display(build.directory)} ({plan}) into {display(run_dir)}", markup=False)
    live = RunDisplay(out, build.lock.training.max_steps)
    try:
        record = execute(build, run_dir, device, drift, resume=args.resume is not None, display=live)
    except RunRefused as exc:
        err.print(f"ftc run: refused: {exc}", markup=False)
        return EXIT_PROBLEMS
    _print_summary(record, run_dir)
    if record.status != "completed":
        code = record.exit_code
        return code if code > 0 else 128 - code  # killed by signal N: 128 + N, as shells report it
    if args.samples and build.lock.method.generates:  # a reward model scores answers and writes none
        from ftc.runtime.evaluate.samples import compare_answers, print_comparison

        quiet_model_loading()
        out.print(f"\nbase versus tuned on {args.samples} held-out example(s), greedy:", markup=False)
        print_comparison(out, compare_answers(run_dir, n=args.samples))
    return EXIT_OK


def _next_step(run_dir: Path, shown: str) -> str:
    """What to do with a finished run: merge it, or (virtual tokens, which do not merge) evaluate and serve it."""
    from ftc.runtime.runfolder import RunFolderError, run_lock

    try:
        method = run_lock(run_dir).method
    except RunFolderError:  # no readable copy of the lock: merging is the usual next step
        return f"ftc merge {shown}"
    if not method.merge_refusal:
        return f"ftc merge {shown}"
    return f"ftc eval {shown}" + (f", then ftc serve {shown}" if method.serve_as else "")


def _print_summary(record: RunRecord, run_dir: Path) -> None:
    from ftc.runtime.runfolder import FINAL, RUN_RECORD, TRAIN_LOG

    def num(value, fmt):
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    status = record.status
    console = out if status == "completed" else err
    console.print(
        f"\n{status}: step {record.step}/{record.max_steps}, "
        f"train loss {num(record.train_loss, '.4f')}, "
        f"eval loss {num(record.eval_loss, '.4f')}, "
        f"{num(record.tokens_per_second, ',.0f')} tokens/s, "
        f"peak memory {num(record.peak_memory_gib, '.2f')} GiB "
        f"({record.peak_memory_kind or 'not reported'})",
        markup=False,
    )
    if record.early_stopped:
        console.print(
            "stopped early: the validation loss stopped improving; "
            f"{FINAL}/ holds the best model, {record.best_checkpoint}",
            markup=False,
        )
    shown = display(run_dir)
    console.print(f"record: {shown}/{RUN_RECORD}; log: {shown}/{TRAIN_LOG}", markup=False)
    if status == "completed":
        console.print(f"next: {_next_step(run_dir, shown)}", markup=False)
    elif record.last_checkpoint:
        console.print(f"continue with: ftc run {record.spec} --resume {shown}", markup=False)
