"""Finding what a run trained from its folder alone: the project root, the locked chat template, and refusals."""

from __future__ import annotations

import json
import shutil

import pytest
from tiny_runs import trained_run

from ftc.runtime.models import locked_chat_template, open_run, placement
from ftc.runtime.runfolder import RunFolderError


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model):
    """trained(method) -> the folder of a finished 2-step run (shared by every test module in the session)."""
    return lambda method: trained_run(tmp_path_factory, tiny_model, method)


def _copy_run(run_dir, dest, record):
    """The run's lock and final/ under another run id, with the given run.json."""
    dest.mkdir()
    shutil.copy2(run_dir / "ftc.lock.json", dest / "ftc.lock.json")
    shutil.copytree(run_dir / "final", dest / "final")
    (dest / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return dest


def test_root_defaults_to_the_folder_above_runs(trained):
    run_dir = trained("lora")
    copy = _copy_run(run_dir, run_dir.parent / "no-root", {})
    run = open_run(copy)
    assert run.root == run_dir.parents[2].resolve()
    text, path = locked_chat_template(run)
    assert path == copy / "final" / "chat_template.jinja" and "<|im_start|>" in text
    assert placement(run.lock).device == "cpu"


def test_a_changed_chat_template_is_refused(trained):
    run_dir = trained("lora")
    record = json.loads((run_dir / "run.json").read_text())
    copy = _copy_run(run_dir, run_dir.parent / "edited-template", record)
    (copy / "final" / "chat_template.jinja").write_text(
        "{{ messages }}", encoding="utf-8"
    )
    (run_dir.parents[2] / "build" / "tiny-lora" / "chat_template.jinja").rename(
        copy / "moved.jinja"
    )
    try:
        with pytest.raises(RunFolderError, match="locked chat template"):
            locked_chat_template(open_run(copy))
    finally:
        (copy / "moved.jinja").rename(
            run_dir.parents[2] / "build" / "tiny-lora" / "chat_template.jinja"
        )


def test_an_unfinished_run_is_refused(trained):
    run_dir = trained("lora")
    copy = _copy_run(run_dir, run_dir.parent / "unfinished", {})
    shutil.rmtree(copy / "final")
    with pytest.raises(RunFolderError, match="did not finish"):
        open_run(copy)


def test_an_adapter_is_refused_on_a_base_that_changed(trained):
    run_dir = trained("lora")
    record = json.loads((run_dir / "run.json").read_text())
    copy = _copy_run(run_dir, run_dir.parent / "other-base", record)
    lock = json.loads((copy / "ftc.lock.json").read_text())
    lock["inputs"]["model"]["files"]["model.safetensors"] = "0" * 64  # the run trained on other weights
    (copy / "ftc.lock.json").write_text(json.dumps(lock), encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"changed since this run trained on it \(model.safetensors differ"):
        open_run(copy)
