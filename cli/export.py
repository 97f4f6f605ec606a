"""`ftc export RUN_DIR`: quantized copies of merged/, each behind a parity gate against it."""

from __future__ import annotations

import argparse

from ftc.cli.common import UsageError, display, err, out, quiet_model_loading, run_folder, step_reporter
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS
from ftc.compiler.spec.export import FORMATS


def add_export(verbs) -> None:
    p = verbs.add_parser(
        "export",
        help="write quantized copies of a run's merged model (GGUF, compressed-tensors), each gated against it",
        description=(
            "Write RUN_DIR/exports/<format>/ from RUN_DIR/merged/ (run `ftc merge` first), for each format of the "
            "spec's [export] table or of --format: GGUF f16, q8_0, q4_0 and q4_1 (llama.cpp, Ollama; written by "
            "ftc, no llama.cpp build needed; the Llama family; the k-quants through the llama-cpp extra), and "
            "compressed-tensors w8a8 and w4a16 (vLLM). Each carries the locked chat template, the tokenizer and the "
            "stop tokens. Each is loaded back and compared with merged/ on held-out examples: top-1 agreement of "
            "the logits, the task metrics of `ftc eval` on greedy answers, and the size, against the thresholds of "
            "[export.gate] or the format's defaults. An export that fails is kept as exports/<format>.rejected/ "
            "for inspection. Every result is recorded in run.json under \"exports\". Exit statuses: 0 every "
            "format passed, 1 one was rejected or nothing could be exported, 2 usage error."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder, e.g. runs/quickstart/20250101-120000")
    p.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=FORMATS,
        metavar="FORMAT",
        help=f"a format to export, instead of the spec's export.formats; repeat for several ({', '.join(FORMATS)})",
    )
    p.add_argument(
        "--examples", type=int, metavar="N", help="held-out examples for the gate (default: export.examples, 16)"
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ftc.compiler.build.lock import LOCK_NAME
    from ftc.runtime.runfolder import RUN_RECORD, RunFolderError

    run_dir = run_folder(args.run_dir, (RUN_RECORD, LOCK_NAME))
    if args.examples is not None and args.examples < 1:
        raise UsageError("--examples must be at least 1")
    if args.formats and len(set(args.formats)) != len(args.formats):
        raise UsageError("a --format is given twice")
    from ftc.runtime.export.run import ExportRefused, export_run

    quiet_model_loading()
    try:
        with err.status("exporting", spinner="dots") as status:
            results = export_run(run_dir, args.formats, args.examples, step=step_reporter(status))
    except (RunFolderError, ExportRefused) as exc:
        err.print(f"ftc export: {exc}", markup=False)
        return EXIT_PROBLEMS
    for result in results:
        gate = result.record.gate
        size = f"{gate['size_mib']:.1f} MiB"
        facts = f"top-1 {gate['top1_agreement']:.1%}, answers identical {gate['answers_identical']}, {size}"
        if result.passed:
            out.print(f"{result.format}: passed ({facts}): {display(result.path)}/", markup=False)
        else:
            why = "; ".join(result.record.failures)
            out.print(f"{result.format}: rejected ({facts}): {why}; kept in {display(result.path)}/", markup=False)
    out.print(f"recorded under \"exports\" in {display(run_dir / RUN_RECORD)}", markup=False)
    return EXIT_OK if all(r.passed for r in results) else EXIT_PROBLEMS
