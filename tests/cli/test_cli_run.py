"""cli/run.py: `ftc run`'s usage errors and its closing summary (tests/runtime/test_run.py trains end to end)."""

from __future__ import annotations

from pathlib import Path

from invoke import invoke

from ftc.cli.run import _print_summary
from ftc.runtime.runfolder import RunRecord

FIELDS = {
    "spec": "specs/quickstart.toml",
    "status": "completed",
    "step": 30,
    "max_steps": 30,
    "train_loss": 0.54691,
    "eval_loss": 0.55743,
    "tokens_per_second": 12345.6,
    "peak_memory_gib": 1.234,
    "peak_memory_kind": "cuda max allocated",
}
RECORD = RunRecord(**FIELDS)


def test_run_usage_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(capsys, "run", "nothing/here")
    assert result.code == 2
    assert result.err == "ftc run: error: not found: nothing/here (give a spec file or a build folder)\n"
    (tmp_path / "spec.toml").write_text("")
    result = invoke(capsys, "run", "spec.toml", "--samples", "-1")
    assert (result.code, result.err) == (2, "ftc run: error: --samples must be 0 or more\n")


def test_a_completed_run_says_what_comes_next(capsys):
    _print_summary(RECORD, Path("runs/quickstart/1"))
    printed = capsys.readouterr()
    assert printed.err == ""
    assert printed.out.splitlines() == [
        "",
        "completed: step 30/30, train loss 0.5469, eval loss 0.5574, 12,346 tokens/s, "
        "peak memory 1.23 GiB (cuda max allocated)",
        "record: runs/quickstart/1/run.json; log: runs/quickstart/1/train.log",
        "next: ftc merge runs/quickstart/1",
    ]


def test_an_interrupted_run_says_how_to_resume(capsys):
    fields = {**FIELDS, "status": "interrupted", "step": 12, "eval_loss": None, "peak_memory_kind": None}
    _print_summary(RunRecord(**fields, last_checkpoint="checkpoint-10"), Path("runs/quickstart/1"))
    printed = capsys.readouterr()
    assert printed.out == ""
    assert "interrupted: step 12/30, train loss 0.5469, eval loss -," in printed.err
    assert "(not reported)" in printed.err
    assert printed.err.endswith("continue with: ftc run specs/quickstart.toml --resume runs/quickstart/1\n")


def test_an_early_stop_names_the_best_checkpoint(capsys):
    _print_summary(RunRecord(**FIELDS, early_stopped=True, best_checkpoint="checkpoint-20"), Path("r"))
    assert "stopped early: the validation loss stopped improving; final/ holds the best model, checkpoint-20" in (
        capsys.readouterr().out
    )
