"""Run `ftc ...` in this process and collect what it printed; argparse's own exits become exit codes."""

from __future__ import annotations

from typing import NamedTuple

from ftc.cli.main import main


class Result(NamedTuple):
    code: int
    out: str
    err: str


def invoke(capsys, *argv: str) -> Result:
    capsys.readouterr()  # drop anything printed before
    try:
        code = main(list(argv))
    except SystemExit as exc:  # --help, --version and argparse's usage errors
        code = exc.code
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)
