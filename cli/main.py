"""The `ftc` command line: the parser and the dispatch. Each verb lives with its group in cli/.

Exit codes (compiler/exitcodes.py): 0 ok, 1 the spec or build has problems, 2 usage errors, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ftc.cli.api import add_api
from ftc.cli.common import UsageError, err
from ftc.cli.compile import add_compile, add_diff, add_eject, add_plan
from ftc.cli.data import add_data
from ftc.cli.evaluate import add_eval, add_report
from ftc.cli.export import add_export
from ftc.cli.promote import add_promote
from ftc.cli.run import add_run
from ftc.cli.runs import add_runs
from ftc.cli.serve import add_merge, add_serve
from ftc.cli.spec import add_init, add_schema, add_validate
from ftc.compiler import __version__
from ftc.compiler.exitcodes import EXIT_INTERRUPTED, EXIT_USAGE

# Each adds one verb to the parser, in the order `ftc --help` lists them.
VERBS = (
    add_validate,
    add_compile,
    add_run,
    add_runs,
    add_merge,
    add_export,
    add_eval,
    add_report,
    add_promote,
    add_serve,
    add_api,
    add_data,
    add_schema,
    add_plan,
    add_diff,
    add_eject,
    add_init,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftc",
        description="ftc compiles a fine-tuning spec (TOML) into a locked, reviewable build, and runs it.",
    )
    parser.add_argument("--version", action="version", version=f"ftc {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for add_verb in VERBS:
        add_verb(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; argparse exits 2 itself on a bad invocation and 0 after --help."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        err.print(f"ftc {args.verb}: error: {exc}", markup=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
