"""cli/common.py: spec and run-folder arguments, and how long steps report on a plain (non-terminal) stderr."""

from __future__ import annotations

import pytest

from ftc.cli.common import UsageError, print_sections, run_folder, spec_path, step_reporter


def test_spec_path(tmp_path):
    spec = tmp_path / "ftc.toml"
    spec.write_text("")
    assert spec_path(str(spec)) == spec
    with pytest.raises(UsageError, match="is a folder; give the spec file"):
        spec_path(str(tmp_path))
    with pytest.raises(UsageError, match="^spec not found: .*missing.toml$"):
        spec_path(str(tmp_path / "missing.toml"))


def test_run_folder_names_the_first_missing_file(tmp_path):
    with pytest.raises(UsageError, match=r"is not a run folder \(it has no run.json\)"):
        run_folder(str(tmp_path), ("run.json", "ftc.lock.json"))
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(UsageError, match=r"\(it has no ftc.lock.json\); give one that `ftc run` made"):
        run_folder(str(tmp_path), ("run.json", "ftc.lock.json"))
    (tmp_path / "ftc.lock.json").write_text("{}")
    assert run_folder(str(tmp_path), ("run.json", "ftc.lock.json")) == tmp_path


def test_steps_print_one_line_each_off_a_terminal(capsys):
    step_reporter(None)("loading the model")
    step_reporter(None, quiet=True)("not shown")
    assert capsys.readouterr().err == "  loading the model\n"


def test_sections_print_as_plain_text(capsys):
    print_sections("model\n  name: tiny\n\ntraining\n  steps: 3")
    assert capsys.readouterr().out == "model\n  name: tiny\n\ntraining\n  steps: 3\n"
