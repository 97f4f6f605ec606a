"""Champion and challenger: `ftc eval RUN --against CHAMPION` (its options and handler, which cli/evaluate.py
hands over to) and `ftc promote`, which records the run `ftc serve NAME` serves."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ftc.cli.common import UsageError, display, err, out, quiet_model_loading, step_reporter
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS


def add_against_options(p) -> None:
    """`ftc eval`'s options for comparing with a champion run."""
    p.add_argument(
        "--against",
        metavar="CHAMPION_RUN",
        help="instead of base versus tuned, score RUN (the challenger) and this run (the champion, e.g. the promoted "
        "one) on RUN's held-out examples with the same decoding and metrics; check that no metric gets worse by more "
        "than evaluation.max_regression and that the headline metric rises; write RUN/against.json (eval.json stays)",
    )
    p.add_argument(
        "--max-regression",
        type=float,
        metavar="X",
        help="with --against: how far any metric may drop below the champion's (default: evaluation.max_regression)",
    )
    p.add_argument(
        "--headline",
        metavar="METRIC",
        help="with --against: the metric that must rise (default: evaluation.headline, else the first metric "
        "other than mean_length)",
    )
    p.add_argument(
        "--min-gain",
        type=float,
        metavar="X",
        help="with --against: how much the headline metric must rise at least (default: evaluation.min_headline_gain; "
        "it must rise in any case)",
    )


def check_against_options(args: argparse.Namespace) -> None:
    """The --against options go together, and not with --endpoint."""
    if args.against is None:
        options = {"--max-regression": args.max_regression, "--headline": args.headline, "--min-gain": args.min_gain}
        given = [flag for flag, value in options.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} go(es) with --against CHAMPION_RUN")
        return
    if args.endpoint:
        raise UsageError("--against loads both runs here; it does not go with --endpoint")
    for flag, value in (("--max-regression", args.max_regression), ("--min-gain", args.min_gain)):
        if value is not None and not 0 <= value <= 1:
            raise UsageError(f"{flag} must be between 0 and 1")
    if not Path(args.against).is_dir():
        raise UsageError(f"--against: not found: {args.against} (give the champion's run folder, runs/<name>/<run-id>)")


def cmd_eval_against(args: argparse.Namespace, target: Path) -> int:
    """`ftc eval RUN --against CHAMPION_RUN`: exit 1 when the regression gate fails, 2 for a senseless pair."""
    from ftc.runtime.evaluate.against import AgainstUsage, compare_against, print_against
    from ftc.runtime.evaluate.compare import resolve_run
    from ftc.runtime.runfolder import RunFolderError

    quiet_model_loading()
    try:
        run_dir = resolve_run(target)
        with err.status("comparing with the champion", spinner="dots") as status:
            result = compare_against(
                run_dir, Path(args.against), args.max_examples, args.max_regression, args.headline, args.min_gain,
                step=step_reporter(status),
            )
    except AgainstUsage as exc:
        raise UsageError(str(exc)) from None
    except RunFolderError as exc:
        err.print(f"ftc eval: {exc}", markup=False)
        return EXIT_PROBLEMS
    if args.json:
        out.print(json.dumps(result.record.to_json(), indent=2, ensure_ascii=False), markup=False, soft_wrap=True)
    else:
        print_against(out, result)
        out.print(f"wrote {display(result.path)} in {result.seconds:.0f}s", markup=False)
    if not result.record.verdict.passed:
        champion = result.record.champion.run
        err.print(f"ftc eval: the challenger fails the regression gate against {champion}", markup=False)
        return EXIT_PROBLEMS
    return EXIT_OK


def add_promote(verbs) -> None:
    p = verbs.add_parser(
        "promote",
        help="make a run the one `ftc serve NAME` serves, with evidence and history (runs/<name>/promoted.json)",
        description=(
            "Record RUN as the promoted run of its project in runs/<name>/promoted.json, with its run id, plan hash, "
            "time, user, reason and evidence. Refused (exit 1, saying what to run) unless the run completed, its "
            "merge is verified (`ftc merge`), its eval gates hold (`ftc eval`) and, when another run is promoted, "
            "`ftc eval RUN --against <that run>` passed; --force promotes anyway and records what it overrode. "
            "`ftc promote NAME --rollback` makes the previously promoted run current again; "
            "`ftc promote NAME --show` prints the current run and the history."
        ),
    )
    p.add_argument(
        "target",
        metavar="RUN|NAME",
        help="the run folder to promote (runs/<name>/<run-id>, or a spec for its newest completed run); with "
        "--rollback or --show, the project name (or a spec or one of its runs)",
    )
    p.add_argument("--reason", metavar="TEXT", help="why, recorded with the entry")
    p.add_argument("--force", action="store_true", help="promote without the evidence; what it overrode is recorded")
    p.add_argument("--rollback", action="store_true", help="make the previously promoted run of NAME current again")
    p.add_argument(
        "--show", "--history", dest="show", action="store_true", help="print the promoted run and the history"
    )
    p.add_argument("--json", action="store_true", help="with --show: print promoted.json")
    p.set_defaults(func=cmd_promote)


def cmd_promote(args: argparse.Namespace) -> int:
    from ftc.runtime.promote import project_dir_of, promote, read_promoted, rollback, stack
    from ftc.runtime.runfolder import RunFolderError

    if args.rollback and args.show:
        raise UsageError("give --rollback or --show, not both")
    if args.force and (args.rollback or args.show):
        raise UsageError("--force goes with promoting a run")
    if args.json and not args.show:
        raise UsageError("--json goes with --show")
    if args.reason is not None and not args.reason.strip():
        raise UsageError("--reason is blank")
    try:
        if args.show or args.rollback:
            project_dir = project_dir_of(args.target, Path.cwd())
            if args.show:
                return _show(project_dir, read_promoted(project_dir), stack, args.json)
            done = rollback(project_dir, args.reason)
            shown = f"rolled back {done.entry.previous} -> {done.entry.run}; wrote {display(done.path)}"
            out.print(shown, markup=False)
            return EXIT_OK
        target = Path(args.target)
        if not target.exists():
            raise UsageError(f"not found: {args.target} (give a run folder, such as runs/<name>/<run-id>, or a spec)")
        from ftc.runtime.evaluate.compare import resolve_run

        done = promote(resolve_run(target), args.reason, args.force)
    except RunFolderError as exc:
        err.print(f"ftc promote: {exc}", markup=False)
        return EXIT_PROBLEMS
    if done.entry.forced:
        for problem in done.entry.evidence.get("overridden", []):
            err.print(f"ftc promote: forced past: {problem}", markup=False)
    was = f" (was {done.entry.previous})" if done.entry.previous else ""
    out.print(f"promoted {done.entry.run} for {done.record.project}{was}; wrote {display(done.path)}", markup=False)
    return EXIT_OK


def _show(project_dir: Path, record, stack, as_json: bool) -> int:
    if as_json:
        text = json.dumps(record.to_json() if record else None, indent=2, ensure_ascii=False)
        out.print(text, markup=False, soft_wrap=True)
        return EXIT_OK
    if record is None:
        out.print(f"nothing promoted in {display(project_dir)}; promote a run with `ftc promote RUN`", markup=False)
        return EXIT_OK
    out.print(f"{record.project}: promoted run {record.current or '(none)'}", markup=False)
    for entry in record.history:
        extra = " [forced]" if entry.forced else ""
        why = f" - {entry.reason}" if entry.reason else ""
        against = entry.evidence.get("against") or {}
        vs = f"; against {against['champion']}: {'passed' if against.get('passed') else 'failed'}" if against else ""
        line = f"  {entry.when}  {entry.action:<8} {entry.run}  by {entry.user or '?'}{extra}{vs}{why}"
        out.print(line, markup=False)
    runs = stack(record)
    if len(runs) >= 2:
        out.print(f"`ftc promote {record.project} --rollback` would make {runs[-2]} current", markup=False)
    return EXIT_OK
