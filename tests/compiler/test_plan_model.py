"""The Plan is a typed, frozen value: `resolve` returns it whole, the lock is its JSON plus the artifacts, and
reading a lock gives the same value back. A lock of another format version, or one edited out of shape, gets a
"compile again" message, never a traceback."""

from __future__ import annotations

import json

import pytest
from built import quickstart
from pydantic import ValidationError

from ftc.cli.main import main
from ftc.compiler.build.lock import LOCK_NAME, LockError, canonical, plan_hash, read_lock
from ftc.compiler.plan.model import FORMAT_VERSION, Lock, Plan


def test_the_lock_reads_back_as_the_value_that_was_written(tmp_path):
    build = quickstart()
    assert isinstance(build.lock, Lock) and build.lock.format_version == FORMAT_VERSION == 2
    path = tmp_path / LOCK_NAME
    path.write_text(build.files[LOCK_NAME], encoding="utf-8")
    again = read_lock(path)
    assert again == build.lock
    assert canonical(again.to_json()) == build.files[LOCK_NAME]
    assert plan_hash(again) == build.plan_hash == plan_hash(Plan.model_validate({k: v for k, v in again.to_json().items() if k != "artifacts"}))


def test_the_plan_is_frozen_and_typed():
    lock = quickstart().lock
    with pytest.raises(ValidationError):
        lock.training.max_steps = 1
    assert isinstance(lock.training.max_steps, int) and lock.method.kind == "lora"
    assert lock.training.rows_per_forward * lock.training.gradient_accumulation_steps > 0
    assert lock.inputs.reference_model is None and "reference_model" not in lock.to_json()["inputs"]


def test_absent_sections_stay_absent_and_null_values_stay_null():
    data = quickstart().lock.to_json()
    assert "cleaning" not in data["data"] and "converted_from" not in data["data"]
    assert data["data"]["system_prompt"] is None and "system_prompt" in data["data"]  # resolved to nothing: written


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d.update(format_version=1), "format_version 1, but this ftc reads format 2"),
        (lambda d: d["training"].update(max_steps="many"), "training.max_steps"),
        (lambda d: d["method"].update(rank=3), "method.lora.rank"),
        (lambda d: d.pop("training"), "training"),
    ],
)
def test_a_lock_from_elsewhere_gets_a_clear_message(tmp_path, edit, says):
    data = quickstart().lock.to_json()
    edit(data)
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(LockError) as caught:
        read_lock(path)
    assert says in str(caught.value) and "ftc compile" in str(caught.value)


def test_ftc_diff_on_an_old_lock_says_compile_again(tmp_path, capsys):
    data = quickstart().lock.to_json() | {"format_version": 1}
    (tmp_path / "old.json").write_text(json.dumps(data), encoding="utf-8")
    (tmp_path / "new.json").write_text(quickstart().files[LOCK_NAME], encoding="utf-8")
    assert main(["diff", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 1
    printed = capsys.readouterr().err
    assert "format_version 1" in printed and "ftc compile" in printed and "Traceback" not in printed
