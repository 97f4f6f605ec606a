"""Properties over generated hostile input (issue 14): whatever spec or data a user hands ftc, the outcome is
exit 0, or exit 1 with at least one `file:line` diagnostic; never a Python traceback, and never a write
outside build/<name>/ (`ftc validate` and `ftc data check` write nothing at all).

The specs and data files come from strategies.py: valid ones for the tiny Llama, mutated (keys dropped, added,
renamed, moved and duplicated, values of the wrong type, unicode, non-finite floats, huge integers, deep
nesting, broken TOML and JSON, invalid UTF-8), so that most examples reach ftc's deeper checks. Every command
runs in process (tests/attack.py) in one temporary project per module, which holds a copy of the tiny model and
the data; its build/ folder is removed after each example. The seed is fixed (derandomize) and the example
counts are bounded, so that a run is repeatable and takes about a minute.

Three narrower properties at the end pin defects the general ones found that were not tracebacks (a misleading
message, a misplaced one, a silent acceptance).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from attack import Outcome, ftc_in_process, snapshot, writes_outside
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from strategies import CHAT, COMPLETION, PREFERENCE, RECORDS, base_specs, data_file, render, spec_bytes

from ftc.compiler.build.lock import LOCK_NAME
from ftc.compiler.spec.validate import Spec

SPEC = "spec.toml"
DATA = "data/prop.jsonl"
NOWHERE = "\0"  # an `allowed` folder no path starts with: no writes at all


def _settings(examples: int, shrink: bool = True):
    return settings(
        max_examples=examples,
        # a known defect's example needs no shrinking: each step would run ftc again
        phases=tuple(Phase) if shrink else (Phase.explicit, Phase.generate),
        deadline=None,
        derandomize=True,
        database=None,
        # the autouse fixture that only points ftc's hash cache at a temporary folder is function scoped
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model) -> Path:
    """A project with the tiny model and small valid data files of each format."""
    root = tmp_path_factory.mktemp("properties") / "project"
    shutil.copytree(tiny_model, root / "model")
    for path, fmt in ((CHAT, "chat"), (COMPLETION, "completion"), (PREFERENCE, "preference")):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("".join(_json_line(RECORDS[fmt](i)) for i in range(12)), encoding="utf-8")
    return root


def _json_line(record: dict) -> str:
    return json.dumps(record) + "\n"


def _project_name(spec: bytes) -> str | None:
    """The build folder's name if the spec parses and names one; else None."""
    try:
        name = tomllib.loads(spec.decode("utf-8")).get("project", {}).get("name")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _attempt(project: Path, files: dict[str, bytes], *args: str) -> tuple[Outcome, list[str], dict]:
    """Write `files` into the project, run ftc, and return its outcome, the paths it wrote outside
    build/<name>/, and the snapshot after; then remove the build folder (the next example overwrites the files)."""
    for path, data in files.items():
        (project / path).write_bytes(data)
    name = _project_name(files.get(SPEC, b"")) if SPEC in files else None
    allowed = f"build/{name}" if name and args[0] == "compile" else NOWHERE
    before = snapshot(project)
    try:
        outcome = ftc_in_process(*args, cwd=project)
        after = snapshot(project)
        return outcome, writes_outside(before, after, allowed), after
    finally:
        shutil.rmtree(project / "build", ignore_errors=True)


def _assert_promise(outcome: Outcome, writes: list[str], shown: bytes) -> None:
    context = f"{outcome}\n--- input\n{shown[:4000]!r}"
    assert outcome.traceback is None, context
    assert outcome.code in (0, 1), context
    if outcome.code == 1:
        assert outcome.located, f"exit 1 without a file:line diagnostic\n{context}"
    assert not writes, f"wrote outside build/<name>/: {writes}\n{context}"


@_settings(200)
@given(spec=spec_bytes())
def test_validate_any_spec(project, spec):
    outcome, writes, _ = _attempt(project, {SPEC: spec}, "validate", SPEC)
    _assert_promise(outcome, writes, spec)


@_settings(100)
@given(spec=spec_bytes())
def test_compile_any_spec(project, spec):
    outcome, writes, after = _attempt(project, {SPEC: spec}, "compile", SPEC)
    _assert_promise(outcome, writes, spec)
    if outcome.code == 0:
        assert f"build/{_project_name(spec)}/{LOCK_NAME}" in after, f"exit 0 without a lock\n{outcome}"


def _data_spec(fmt: str) -> bytes:
    """The base spec for a format, reading its training data from DATA ("auto" lets ftc detect it)."""
    base = {"chat": 0, "auto": 0, "completion": 1, "preference": 3}[fmt]
    doc = base_specs()[base]
    for table in doc:
        if table.header == "data":
            table.pairs = [(k, v) for k, v in table.pairs if k not in ("train", "format", "validation_split")]
            table.pairs += [("train", DATA), ("format", fmt)]
    return render(doc).encode()


FORMATS = st.sampled_from(["chat", "completion", "preference", "auto"])


@_settings(120)
@given(data=st.data())
def test_data_check_any_data(project, data):
    fmt = data.draw(FORMATS)
    lines = data.draw(data_file("chat" if fmt == "auto" else fmt))
    outcome, writes, _ = _attempt(project, {SPEC: _data_spec(fmt), DATA: lines}, "data", "check", SPEC)
    _assert_promise(outcome, writes, lines)


@_settings(60)
@given(data=st.data())
def test_compile_any_data(project, data):
    fmt = data.draw(FORMATS)
    lines = data.draw(data_file("chat" if fmt == "auto" else fmt))
    spec = _data_spec(fmt)
    outcome, writes, after = _attempt(project, {SPEC: spec, DATA: lines}, "compile", SPEC)
    _assert_promise(outcome, writes, lines)
    if outcome.code == 0:
        assert f"build/{_project_name(spec)}/{LOCK_NAME}" in after, f"exit 0 without a lock\n{outcome}"


def _text_keys() -> list[tuple[str, str]]:
    """(table, key) of every free-text key: a string (or nothing), with no fixed set of values."""
    schema = Spec.model_json_schema()
    found = []
    for table in schema["properties"]:
        model = schema["$defs"]["Lora" if table == "method" else table.capitalize()]
        for key, prop in model["properties"].items():
            options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
            if options and all(o.get("type") == "string" and "enum" not in o and "const" not in o for o in options):
                found.append((table, key))
    return found


NOT_TEXT = st.sampled_from([math.nan, math.inf, -math.inf, 2**64, -(2**63) - 1, 10**30, 7, 1.5, True])


@_settings(40, shrink=False)
@given(where=st.sampled_from(_text_keys()), value=NOT_TEXT)
def test_a_text_key_given_a_number_is_told_it_takes_text(project, where, value):
    table, key = where
    doc = base_specs()[0]
    for section in doc:
        if section.header == table:
            section.pairs = [(k, v) for k, v in section.pairs if k != key] + [(key, value)]
    spec = render(doc).encode()
    outcome, writes, _ = _attempt(project, {SPEC: spec}, "validate", SPEC)
    _assert_promise(outcome, writes, spec)
    about = [line for line in outcome.stderr.splitlines() if re.match(rf"^\S+:\d+:\d+: {table}\.{key}: ", line)]
    assert about and all("string" in line for line in about), f"{table}.{key} = {value!r}:\n{outcome.stderr}"


@_settings(10, shrink=False)
@given(max_length=st.integers(4097, 2**20))  # above 2**20 the schema refuses it anyway
def test_max_length_beyond_the_models_context_is_reported(project, max_length):
    doc = base_specs()[0]
    for section in doc:
        if section.header == "data":
            section.pairs = [(k, v) for k, v in section.pairs if k != "max_length"] + [("max_length", max_length)]
    spec = render(doc).encode()
    outcome, writes, _ = _attempt(project, {SPEC: spec}, "compile", SPEC)
    _assert_promise(outcome, writes, spec)
    assert re.search(r"^\S+:\d+:\d+: data\.max_length: .*2048", outcome.stderr, re.MULTILINE), outcome.stderr


@_settings(20, shrink=False)
@given(base=st.sampled_from(base_specs()), cut=st.integers(0, 10**6), opening=st.sampled_from(["[", '"', "{", "'''"]))
def test_an_unterminated_value_at_the_end_is_located_there(project, base, cut, opening):
    lines = render(base).splitlines()
    keys = [n for n, line in enumerate(lines) if " = " in line]
    last = keys[cut % len(keys)]
    spec = ("\n".join(lines[:last] + [lines[last].split(" = ")[0] + " = " + opening]) + "\n").encode()
    outcome, writes, _ = _attempt(project, {SPEC: spec}, "validate", SPEC)
    _assert_promise(outcome, writes, spec)
    assert outcome.code == 1 and re.search(rf"^{SPEC}:{last + 1}:\d+: ", outcome.stderr, re.MULTILINE), f"expected line {last + 1}:\n{outcome.stderr}"
