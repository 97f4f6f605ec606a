"""cli/evaluate.py: the usage errors of `ftc eval` and `ftc report` (tests/runtime/test_eval.py and
test_report.py run them on a trained tiny model)."""

from __future__ import annotations

from invoke import invoke


def test_eval_usage_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(capsys, "eval", "nothing/here")
    assert result.code == 2 and result.err.startswith("ftc eval: error: not found: nothing/here (give a run folder")
    result = invoke(capsys, "eval", ".", "--max-examples", "0")
    assert (result.code, result.err) == (2, "ftc eval: error: --max-examples must be at least 1\n")
    for flags in (["--endpoint-model", "m"], ["--api-key-env", ""]):
        result = invoke(capsys, "eval", ".", *flags)
        assert result.code == 2
        assert result.err == "ftc eval: error: --endpoint-model and --api-key-env go with --endpoint URL\n"


def test_report_needs_a_run_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    result = invoke(capsys, "report", ".")
    assert result.code == 2
    assert result.err == (
        "ftc report: error: . is not a run folder (it has no ftc.lock.json); give one that `ftc run` made, "
        "such as runs/<name>/<run-id>\n"
    )
