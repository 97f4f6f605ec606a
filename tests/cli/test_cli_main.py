"""cli/main.py: the parser lists every verb, each has --help, and bad invocations exit 2 with a message."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import invoke

from ftc.cli import spec as spec_verbs
from ftc.cli.main import build_parser
from ftc.compiler import __version__

CLI = Path(__file__).resolve().parents[2] / "cli"


def _verbs() -> list[str]:
    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(subparsers.choices)


VERBS = _verbs()


def test_the_verbs_in_the_order_help_lists_them():
    assert VERBS == [
        "validate", "compile", "run", "runs", "merge", "export", "eval", "report", "promote", "serve", "api",
        "data", "schema", "plan", "diff", "eject", "init",
    ]  # fmt: skip


def test_top_level_help_lists_every_verb(capsys):
    result = invoke(capsys, "--help")
    assert result.code == 0
    assert result.out.startswith("usage: ftc [-h] [--version] VERB ...")
    for verb in VERBS:
        assert f"\n    {verb} " in result.out


@pytest.mark.parametrize("argv", [[verb] for verb in VERBS] + [["data", "check"], ["data", "convert"], ["data", "from-logs"], ["data", "synthesize"]], ids=" ".join)
def test_every_verb_has_help(capsys, argv):
    result = invoke(capsys, *argv, "--help")
    assert result.code == 0
    assert result.out.startswith(f"usage: ftc {' '.join(argv)} [-h]")
    assert result.err == ""


def test_version(capsys):
    result = invoke(capsys, "--version")
    assert (result.code, result.out) == (0, f"ftc {__version__}\n")


def test_no_verb_exits_2(capsys):
    result = invoke(capsys)
    assert result.code == 2
    assert "error: the following arguments are required: VERB" in result.err


def test_an_unknown_verb_exits_2_naming_it_and_the_choices(capsys):
    result = invoke(capsys, "frobnicate")
    assert result.code == 2
    assert "ftc: error: argument VERB: invalid choice: 'frobnicate'" in result.err
    assert "'validate'" in result.err and "'init'" in result.err


@pytest.mark.parametrize("verb", VERBS)
def test_a_bad_flag_exits_2(capsys, verb):
    result = invoke(capsys, verb, "--no-such-flag")
    assert result.code == 2
    assert result.err.startswith("usage: ftc") and "error:" in result.err


def test_a_bad_value_exits_2(capsys):
    result = invoke(capsys, "init", "--method", "nope")
    assert result.code == 2 and "argument --method: invalid choice: 'nope'" in result.err
    result = invoke(capsys, "serve", "x", "--port", "abc")
    assert result.code == 2 and "argument --port: invalid int value: 'abc'" in result.err


def test_a_usage_error_exits_2_naming_the_verb(capsys, monkeypatch):
    def refuse(args):
        raise spec_verbs.UsageError("spec not found: x.toml")

    monkeypatch.setattr(spec_verbs, "cmd_validate", refuse)
    result = invoke(capsys, "validate", "x.toml")
    assert (result.code, result.err) == (2, "ftc validate: error: spec not found: x.toml\n")


def test_ctrl_c_exits_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(spec_verbs, "cmd_schema", interrupted)
    result = invoke(capsys, "schema")
    assert (result.code, result.err) == (130, "interrupted\n")


def test_python_m_ftc_cli_exits_with_mains_status():
    command = [sys.executable, "-m", "ftc.cli"]
    done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"ftc {__version__}\n")
    done = subprocess.run([*command, "frobnicate"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'frobnicate'" in done.stderr


def test_the_cli_modules_stay_readable():
    """At most 120 characters a line, so the argument definitions read without scrolling."""
    long = [
        f"{path.name}:{number}: {len(line)} characters"
        for path in sorted(CLI.glob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if len(line) > 120
    ]
    assert long == []


FRESH = [
    (["validate", "missing.toml"], "ftc validate: error: spec not found: missing.toml"),
    (["compile", "missing.toml"], "ftc compile: error: spec not found: missing.toml"),
    (["run", "missing"], "ftc run: error: not found: missing"),
    (["merge", "."], "ftc merge: error: . is not a run folder"),
    (["eval", "missing"], "ftc eval: error: not found: missing"),
    (["report", "."], "ftc report: error: . is not a run folder"),
    (["serve", "missing", "--parity", "-1"], "ftc serve: error: --parity must be 0 or more"),
    (["data", "check", "missing.toml"], "ftc data: error: spec not found: missing.toml"),
    (["plan", "missing.toml"], "ftc plan: error: spec not found: missing.toml"),
    (["diff", "missing.lock.json", "other.lock.json"], "ftc diff: error: not found: missing.lock.json"),
    (["eject", "missing", "mine"], "ftc eject: error: missing is not a build folder"),
    (["init", "--name", "Bad Name!"], "ftc init: error: project name 'Bad Name!'"),
]


@pytest.mark.parametrize(("argv", "message"), FRESH, ids=[argv[0] for argv, _ in FRESH])
def test_each_verbs_usage_error_in_a_fresh_interpreter(tmp_path, argv, message):
    """In this process the modules are already imported; a fresh one also shows an import cycle on the verb's path."""
    done = subprocess.run(
        [sys.executable, "-m", "ftc.cli", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message), done.stderr
    assert list(tmp_path.iterdir()) == []
