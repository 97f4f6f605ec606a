"""`ftc run SPEC --smoke`: a few steps, a few held-out answers and a verdict, before the real run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ftc.cli.common import UsageError, compile_or_report, display, err, out, quiet_model_loading, step_reporter
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS


def cmd_smoke(args: argparse.Namespace, target: Path) -> int:
    from ftc.compiler.build.smoke import DEFAULT_STEPS
    from ftc.runtime.run.smoke import real_estimate, run_smoke

    steps = DEFAULT_STEPS if args.smoke_steps is None else args.smoke_steps
    if not 1 <= steps <= 1000:
        raise UsageError("--smoke-steps must be between 1 and 1000")
    if target.is_dir() or args.resume is not None:
        raise UsageError("--smoke takes the spec (.toml), and does not resume")
    spec = str(target)
    real = _real_plan(spec) or compile_or_report(spec)  # quiet, then again to report its diagnostics
    if real is None:
        err.print("ftc run --smoke: failed at compile: the spec did not compile (see above)", markup=False)
        return EXIT_PROBLEMS

    result = run_smoke(
        compile_smoke=lambda: compile_or_report(spec, smoke_steps=steps),
        check_device=_device,
        train=lambda build, device: _train(build, device),
        evaluate=_evaluate,
    )
    seconds = sum(result.seconds.values())
    if not result.ok:
        where = f" ({display(result.run_dir)})" if result.run_dir else ""
        err.print(f"ftc run --smoke: failed at {result.failed}{where}: {result.reason}", markup=False)
        return EXIT_PROBLEMS
    loss = f"loss {result.first_loss:.4f} -> {result.last_loss:.4f}"
    moved = "fell" if result.last_loss < result.first_loss else "did not fall"
    out.print(
        f"\nsmoke passed in {seconds:.0f}s: trained {result.steps} step(s), {loss} ({moved}), "
        f"eval ran on {result.eval_examples} held-out example(s); run: {display(result.run_dir)}",
        markup=False,
    )
    estimate = real_estimate(result, real.lock.training.max_steps)
    if estimate is not None:
        per_step = f"{result.seconds_per_step:.2f}s/step"
        out.print(
            f"the real run ({real.lock.training.max_steps} steps) would take about {_duration(estimate)} "
            f"at this pace ({per_step}, measured on {result.steps} step(s) of the first examples)",
            markup=False,
        )
    out.print(f"next: ftc run {spec}", markup=False)
    return EXIT_OK


def _real_plan(spec: str):
    """The real build, compiled in memory and quietly (the smoke build's compile reports the same warnings): its
    steps give the estimate. Nothing is written. None when it does not compile."""
    from ftc.cli.common import spec_path
    from ftc.compiler.build.compile import compile_build
    from ftc.compiler.diagnostics import SpecError

    try:
        return compile_build(spec_path(spec))
    except SpecError:
        return None


def _device(build):
    from ftc.runtime.run.execute import check_device

    return check_device(build.lock)


def _train(build, device):
    from ftc.runtime.run.execute import execute, new_run_dir
    from ftc.runtime.run.progress import RunDisplay

    run_dir = new_run_dir(build)
    out.print(f"smoke: running {display(build.directory)} into {display(run_dir)}", markup=False)
    record = execute(build, run_dir, device, [], resume=False, display=RunDisplay(out, build.lock.training.max_steps))
    return run_dir, record


def _evaluate(run_dir: Path, examples: int):
    from ftc.runtime.evaluate.compare import evaluate_run

    quiet_model_loading()
    with err.status("smoke: evaluating", spinner="dots") as status:
        return evaluate_run(run_dir, max_examples=examples, step=step_reporter(status, quiet=True))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
