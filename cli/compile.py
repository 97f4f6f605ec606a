"""The build's verbs: `ftc compile` writes build/<name>/, `ftc plan` and `ftc diff` show plans, `ftc eject`
copies one out."""

from __future__ import annotations

import argparse
from pathlib import Path

from ftc.cli.common import UsageError, compile_or_report, display, err, out, print_sections, spec_path
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS


def add_compile(verbs) -> None:
    p = verbs.add_parser("compile", help="compile a spec into build/<name>/ (lock file and training script)")
    p.add_argument("spec", help="the spec file")
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the build on disk is stale, naming what changed",
    )
    p.set_defaults(func=cmd_compile)


def cmd_compile(args: argparse.Namespace) -> int:
    from ftc.compiler.build.compile import BuildError, write_build

    if args.check:
        return check(args.spec)
    build = compile_or_report(args.spec)
    if build is None:
        return EXIT_PROBLEMS
    try:
        written = write_build(build)
    except BuildError as exc:
        err.print(f"ftc compile: refused to write {display(build.directory)}/:", markup=False)
        for problem in exc.problems:
            err.print(f"  - {problem}", markup=False)
        return EXIT_PROBLEMS
    if not Path(args.spec).resolve().is_relative_to(Path.cwd().resolve()):
        err.print(
            f"ftc compile: warning: {args.spec} lies outside the working folder, which is the project root: the build "
            f"went to {display(build.directory)}/ here, with paths relative to this folder; run ftc from the project's "
            "root unless you meant this",
            markup=False,
        )
    for path in written:
        out.print(f"wrote {display(path)}", markup=False)
    out.print(f"plan sha256:{build.plan_hash[:12]}; review it with `ftc plan {args.spec}`", markup=False)
    return EXIT_OK


def check(spec: str) -> int:
    """`--check`: compare the inputs' hashes and the build folder with the lock; compile in memory only when an
    input changed, to name every consequence (and to report the spec's diagnostics when it no longer compiles)."""
    from ftc.compiler.build.compile import unsafe_build_paths
    from ftc.compiler.build.stale import check_hashes, stale_reasons

    found = check_hashes(spec_path(spec))
    compiled = []

    def recompile():
        compiled.append(compile_or_report(spec))
        return compiled[-1]

    # a link in the build is followed by the hashes below: it must be named before they are trusted
    unsafe = unsafe_build_paths(found.directory, found.lock.artifacts if found.lock else ()) if found.directory else []
    reasons = unsafe or stale_reasons(found, recompile)
    if compiled and compiled[-1] is None:
        return EXIT_PROBLEMS  # its diagnostics say why
    shown = display(found.directory) if found.directory else "the build"
    if reasons:
        err.print(f"{shown} is stale:", markup=False)
        for reason in reasons:
            err.print(f"  - {reason}", markup=False)
        err.print(f"run `ftc compile {spec}` and commit the result", markup=False)
        return EXIT_PROBLEMS
    out.print(f"{shown} is up to date (plan sha256:{found.plan_hash[:12]})", markup=False)
    return EXIT_OK


def add_plan(verbs) -> None:
    p = verbs.add_parser(
        "plan",
        help="compile a spec in memory and print what it would train, for how long, with how much memory "
        "(writes nothing)",
        description=(
            "Compile SPEC in memory and print the plan a reviewer reads: model, method and trainable parameters, "
            "data, steps, batch, learning rate, optimizer and precision per device, a first memory estimate, "
            "evaluation gates and serving. Writes nothing."
        ),
    )
    p.add_argument("spec", help="the spec file, e.g. specs/quickstart.toml")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from ftc.compiler.plan.summary import describe_plan

    build = compile_or_report(args.spec)
    if build is None:
        return EXIT_PROBLEMS
    print_sections(describe_plan(build.lock))
    if build.warnings:
        out.print()
        print_sections(f"warnings ({len(build.warnings)}, in full on stderr)")
        for diag in build.warnings:
            out.print(f"  {diag.headline()}", markup=False)
    out.print(f"\nnothing written; `ftc compile {args.spec}` writes {display(build.directory)}/", markup=False)
    return EXIT_OK


def add_diff(verbs) -> None:
    p = verbs.add_parser(
        "diff",
        help="show what changed between two plans (lock files, build folders or specs) or two runs",
        description=(
            "Show every difference between two plans, grouped by section. A and B can each be a lock file, "
            "a build folder (holding ftc.lock.json) or a spec (.toml), which is compiled in memory. When both are "
            "run folders (runs/<name>/<run-id>/), show what changed between the runs: lineage (parent, data "
            "hashes), the plan (from each run's copy of the lock), the outcome (status, steps, losses) and the "
            "eval.json metrics. Exits 0 whether or not they differ, unless --exit-code."
        ),
    )
    p.add_argument("a", metavar="A", help="the old side: ftc.lock.json, build/<name>/, a spec .toml or a run folder")
    p.add_argument("b", metavar="B", help="the new side, in any of the same forms")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the plans differ (like git diff --exit-code)")
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    from ftc.compiler.plan.diff import diff_locks
    from ftc.runtime.runfolder import is_run

    if is_run(Path(args.a)) and is_run(Path(args.b)):
        return _diff_runs(Path(args.a), Path(args.b), args.exit_code)
    before, before_label = _lock_for_diff(args.a)
    after, after_label = _lock_for_diff(args.b)
    if before is None or after is None:
        return EXIT_PROBLEMS
    lines = diff_locks(before, after)
    if not lines:
        out.print("no differences", markup=False)
        return EXIT_OK
    out.print(f"--- {before_label}\n+++ {after_label}", markup=False)
    print_sections("\n".join(lines))
    return EXIT_PROBLEMS if args.exit_code else EXIT_OK


def _lock_for_diff(value: str) -> tuple[dict | None, str]:
    """A lock from a lock file, a build folder, or a spec compiled now; (None, label) after reporting problems."""
    from ftc.compiler.build.lock import LOCK_NAME, plan_hash, read_lock

    path = Path(value)
    if path.suffix == ".toml" and not path.is_dir():
        build = compile_or_report(value)
        if build is None:
            return None, value
        return build.lock, f"{value} (compiled now, plan sha256:{build.plan_hash[:12]})"
    if path.is_dir():
        path = path / LOCK_NAME
        if not path.is_file():
            raise UsageError(
                f"{value} has no {LOCK_NAME}; give a build folder, a run folder, a lock file or a spec (.toml)"
            )
    elif not path.is_file():
        raise UsageError(f"not found: {value}")
    try:
        lock = read_lock(path)
    except (ValueError, OSError) as exc:
        err.print(f"ftc diff: cannot read {display(path)}: {str(exc).removeprefix(f'{path}: ')}", markup=False)
        return None, value
    return lock, f"{display(path)} (plan sha256:{plan_hash(lock)[:12]})"


def _diff_runs(a: Path, b: Path, exit_code: bool) -> int:
    from ftc.runtime.runfolder import RunFolderError
    from ftc.runtime.runlist import run_changes

    try:
        sections = run_changes(a, b)
    except RunFolderError as exc:
        err.print(f"ftc diff: {exc}", markup=False)
        return EXIT_PROBLEMS
    if not sections:
        out.print("no differences", markup=False)
        return EXIT_OK
    out.print(f"--- {display(a)}\n+++ {display(b)}", markup=False)
    for name, lines in sections.items():  # the plan's lines carry their own headers, indented under "plan"
        print_sections(f"{name}\n" + "\n".join(f"  {line}" for line in lines))
    return EXIT_PROBLEMS if exit_code else EXIT_OK


def add_eject(verbs) -> None:
    p = verbs.add_parser(
        "eject",
        help="copy a build into a folder of your own that runs without ftc",
        description=(
            "Write DEST/train.py (rendered from the lock, with paths inside DEST), copies of the data and chat "
            "template, requirements.txt pinning the lock's packages, and a README. "
            "A local model is pointed at, not copied."
        ),
    )
    p.add_argument("build", metavar="BUILD", help="the build folder, e.g. build/quickstart")
    p.add_argument("dest", metavar="DEST", help="the folder to write; it must not exist or be empty")
    p.add_argument("--force", action="store_true", help="write into DEST even if it holds files (overwriting ours)")
    p.set_defaults(func=cmd_eject)


def cmd_eject(args: argparse.Namespace) -> int:
    from ftc.compiler.build.eject import DestinationError, EjectError, eject, write_ejected

    build, dest = Path(args.build), Path(args.dest)
    if not build.is_dir():
        raise UsageError(
            f"{args.build} is not a build folder; give one such as build/quickstart (run `ftc compile SPEC` first)"
        )
    try:
        written = write_ejected(eject(build, dest), dest, force=args.force)
    except DestinationError as exc:
        raise UsageError(str(exc)) from None
    except EjectError as exc:
        err.print(f"ftc eject: {exc}", markup=False)
        return EXIT_PROBLEMS
    for path in written:
        out.print(f"wrote {display(path)}", markup=False)
    out.print(f"{display(dest)}/ is yours now and runs without ftc; see its README.md:", markup=False)
    out.print(f"  cd {display(dest)}", markup=False)
    out.print("  pip install -r requirements.txt   # install torch for your machine first", markup=False)
    out.print("  python train.py --output-dir runs/first", markup=False)
    return EXIT_OK
