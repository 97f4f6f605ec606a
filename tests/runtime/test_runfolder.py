"""The run folder: its layout (each file name defined once), its typed records, and a spec's newest run."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from ftc.compiler.build.compile import CHAT_TEMPLATE_NAME
from ftc.compiler.build.lock import LOCK_NAME
from ftc.runtime import runfolder as rf
from ftc.runtime.runfolder import (
    EvalRecord,
    MergeCheck,
    ParityCheck,
    RunFolderError,
    RunRecord,
    Session,
    newest_run,
    read_evaluation,
    read_record,
    record_parity,
    update_record,
    updated,
    write_evaluation,
    write_record,
)

REPO = Path(__file__).resolve().parents[2]

SPEC = """\
[project]
name = "demo"

[model]
base = "model"

[data]
train = "data/train.jsonl"

[method]
kind = "lora"
"""

# run.json as the first `ftc run` wrote it (commit e9148e2): no early_stopped, distributed, merge or serve
OLD_RECORD = {
    "build": "build/demo",
    "device": {"kind": "cpu", "name": "cpu", "precision": "fp32", "threads": 2},
    "ended": "2026-11-28T23:20:00+00:00",
    "eval_loss": 2.5,
    "exit_code": 0,
    "final": "final",
    "format_version": 1,
    "ftc_version": "0.1.0",
    "last_checkpoint": "checkpoints/checkpoint-2",
    "best_checkpoint": None,
    "max_steps": 2,
    "packages": {"torch": "2.5.0", "vllm": None},
    "peak_memory_bytes": 1073741824,
    "peak_memory_gib": 1.0,
    "peak_memory_kind": "max resident set",
    "plan_sha256": "ab" * 32,
    "project": "demo",
    "root": "/somewhere",
    "run_id": "20261128-232000",
    "sessions": [
        {
            "ended": "2026-11-28T23:20:00+00:00", "exit_code": 0, "first_step": 0, "last_step": 2,
            "peak_memory_bytes": 1073741824, "peak_memory_kind": "max resident set", "pid": 4242,
            "resumed": False, "resumed_from": None, "started": "2026-11-28T23:19:00+00:00", "status": "completed",
            "tokens_per_second": 1234.5,
        }
    ],
    "spec": "spec.toml",
    "started": "2026-11-28T23:19:00+00:00",
    "status": "completed",
    "step": 2,
    "tokens_per_second": 1234.5,
    "train_loss": 2.75,
    "version_drift": [],
}

PARITY = {
    "status": "failed", "mode": "adapter", "model": "final", "prompts": 2, "agreeing": 1, "agreement": 0.5, "required": 1.0,
    "first_divergence": {"source": "data/val.jsonl:2", "prompt": "p", "in": "answer", "position": 26, "transformers": "a",
                         "vllm": "b", "transformers_ids": [1, 2], "vllm_ids": [1, 3]},
    "endpoint": "/v1/chat/completions", "served_dtype": "bfloat16", "reference_dtype": "float32", "device": "cpu",
    "max_new_tokens": 64, "examples_from": "the run's held-out examples", "stop_token_ids": [2], "chat_template_sha256": "cd" * 32,
    "vllm": "0.11.0", "transformers": "4.57.0", "checked": "2026-11-29T05:00:00+00:00",
    "results": [{"source": "data/val.jsonl:1", "prompt": "q", "max_tokens": 64, "tokens": 3, "agree": True}],
}

MERGE = {
    "status": "verified", "examples": 3, "positions": 120, "max_abs_logit_diff": 2.5e-06, "mean_abs_logit_diff": 3.1e-07,
    "top1_agreement": 1.0, "dtype": "float32", "path": "merged",
    "tolerance": {"max_abs_logit_diff": 0.046, "mean_abs_logit_diff": 0.0046, "top1_agreement": 0.99, "rule": "s = 1 + max|logit|"},
}


def run_folder(path: Path, record: dict) -> Path:
    path.mkdir(parents=True)
    (path / rf.RUN_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


# ---- layout ---------------------------------------------------------------------------------------------


def test_the_layout_names_each_file_once():
    names = {
        rf.RUN_RECORD: "run.json", rf.EVENTS: "events.jsonl", rf.TRAIN_LOG: "train.log", rf.CHECKPOINTS: "checkpoints",
        rf.LOGS: "logs", rf.FINAL: "final", rf.MERGED: "merged", rf.MERGE_REJECTED: "merged.rejected",
        rf.DEQUANTIZED_BASE: "base-dequantized", rf.QLORA_BASE: "base-qlora-dequantized", rf.SAMPLES: "samples.json",
        rf.EVAL: "eval.json", rf.EVAL_ENDPOINT: "eval-endpoint.json", str(rf.LM_EVAL_TASK): "eval/lm_eval",
        rf.REPORT: "report.html", rf.SERVE_LOG: "serve.log", rf.LOCK: "ftc.lock.json", rf.CHAT_TEMPLATE_NAME: "chat_template.jinja",
        rf.AGAINST: "against.json",
    }
    assert all(name == expected for name, expected in names.items()) and len(names) == 19  # all distinct
    assert sorted(rf.NAMES) == sorted(names)
    assert rf.LOCK is LOCK_NAME and rf.CHAT_TEMPLATE_NAME is CHAT_TEMPLATE_NAME  # the compiler's names, not copies


def test_no_other_runtime_or_cli_module_spells_a_run_folder_file_name():
    """A file name of the run folder appears as a literal in runfolder.py only (or the compiler's, for the lock
    and the chat template). The generated scripts' support code (templates/) runs without ftc and keeps its own."""
    spelled = {
        rf.RUN_RECORD, rf.EVENTS, rf.TRAIN_LOG, rf.MERGE_REJECTED, rf.MERGE_TMP_PREFIX, rf.DEQUANTIZED_BASE, rf.QLORA_BASE,
        rf.SAMPLES, rf.EVAL, rf.EVAL_ENDPOINT, rf.REPORT, rf.SERVE_LOG, rf.LOCK, rf.CHAT_TEMPLATE_NAME, rf.AGAINST,
        rf.PROMOTED,
    }
    found = []
    for folder in ("runtime", "cli"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name == "runfolder.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in spelled:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == []


# ---- records --------------------------------------------------------------------------------------------


def test_a_record_round_trips_with_its_shape(tmp_path):
    run = run_folder(tmp_path / "run", OLD_RECORD)
    before = (run / rf.RUN_RECORD).read_text(encoding="utf-8")
    record = read_record(run)
    assert record.status == "completed" and record.sessions[0].last_step == 2 and record.device.threads == 2
    assert record.packages == {"torch": "2.5.0", "vllm": None} and record.merge is None and record.parity == {}
    write_record(run, record)
    assert (run / rf.RUN_RECORD).read_text(encoding="utf-8") == before  # byte for byte: nothing added, nothing lost

    merged = update_record(run, merge=MergeCheck.model_validate(MERGE))
    assert merged.merge.tolerance.top1_agreement == 0.99 and read_record(run) == merged
    on_disk = json.loads((run / rf.RUN_RECORD).read_text(encoding="utf-8"))
    assert on_disk == {**OLD_RECORD, "merge": MERGE}


def test_a_record_is_frozen_and_refuses_unknown_keys(tmp_path):
    record = RunRecord(status="running")
    with pytest.raises(ValueError):
        record.status = "completed"
    run = run_folder(tmp_path / "typo", {**OLD_RECORD, "stauts": "completed"})
    with pytest.raises(RunFolderError, match="stauts"):
        read_record(run)
    (run / rf.RUN_RECORD).write_text("{cut short", encoding="utf-8")
    with pytest.raises(RunFolderError, match="not valid JSON"):
        read_record(run)
    with pytest.raises(RunFolderError, match="is not a run folder"):
        read_record(tmp_path / "missing")


def test_updated_replaces_and_drops_fields():
    record = RunRecord(status="running", pid=7, sessions=(Session(started="t0", resumed=False),))
    done = updated(record, drop=("pid",), status="completed", sessions=(updated(record.sessions[0], ended="t1"),))
    assert done.to_json() == {"status": "completed", "sessions": [{"started": "t0", "resumed": False, "ended": "t1"}]}
    assert record.pid == 7 and record.status == "running"  # the original is unchanged


def test_older_and_partial_run_records_still_read(tmp_path):
    # an older `ftc serve` kept one parity check, not one per mode
    old = run_folder(tmp_path / "one-check", {**OLD_RECORD, "serve": {"parity": PARITY}})
    record = read_record(old)
    assert list(record.parity) == ["adapter"] and record.parity["adapter"].first_divergence.where == "answer"
    assert record.parity["adapter"].first_divergence.to_json()["in"] == "answer"  # the key on disk stays "in"
    # records as tests and tools write them by hand
    empty = run_folder(tmp_path / rf.RUNS / "demo" / "empty", {})  # no "root": the folder above runs/<name>/<run-id>/
    assert read_record(empty).project_root(empty) == tmp_path.resolve()
    assert read_record(run_folder(tmp_path / "status", {"status": "completed"})).status == "completed"
    failed = read_record(run_folder(tmp_path / "failed-merge", {"merge": {"status": "failed"}}))
    assert failed.merge.status == "failed" and failed.merge.tolerance is None


def test_each_mode_keeps_its_parity_check(tmp_path):
    run = run_folder(tmp_path / "run", OLD_RECORD)
    record_parity(run, ParityCheck.model_validate(PARITY))
    record_parity(run, ParityCheck(status="skipped", mode="merged", reason="--parity 0", checked="2026-11-29T06:00:00+00:00"))
    record = read_record(run)
    assert sorted(record.parity) == ["adapter", "merged"] and record.parity["adapter"] == ParityCheck.model_validate(PARITY)
    on_disk = json.loads((run / rf.RUN_RECORD).read_text(encoding="utf-8"))
    assert on_disk["serve"]["parity"]["adapter"] == PARITY
    assert on_disk["serve"]["parity"]["merged"] == {"status": "skipped", "mode": "merged", "reason": "--parity 0", "checked": "2026-11-29T06:00:00+00:00"}


def test_an_eval_record_round_trips_in_its_key_order(tmp_path):
    evaluation = {
        "format_version": 1, "run": "r", "plan_hash": "ab" * 32, "examples": 1,
        "held_out": {"source": "validation", "path": "data/val.jsonl", "max_examples": None},
        "models": {"base": None, "tuned": "final/ (every weight)"}, "endpoint": None,
        "decoding": {"do_sample": False, "max_new_tokens": 8, "stop_token_ids": [2], "stop_strings": ["</s>"],
                     "chat_template_sha256": "cd" * 32, "batch_size": 16, "padding_side": "left"},
        "metrics": {"exact_match": {"base": None, "tuned": 1.0, "note": None}}, "json_schema": None, "label_field": None,
        "versions": {"torch": "2.5.0"}, "lm_eval": {},
        "gates": [{"gate": "tuned.exact_match >= 0.5", "holds": True, "left": 1.0, "right": 0.5, "error": None}],
        "notes": [], "diagnosis": [{"finding": "f", "evidence": "e", "remedy": "r"}], "not_checked": [],
        "answers": [{"source": "data/val.jsonl:1", "prompt": "p", "reference": "a", "base": None, "tuned": "a", "base_tokens": None, "tuned_tokens": 1}],
        "seconds": {"total": 1.5},
    }
    record = EvalRecord.model_validate(evaluation)
    assert record.gates_hold and record.gates[0].left == 1.0 and record.answers[0].tuned == "a" and record.decoding.stop_token_ids == (2,)
    path = write_evaluation(tmp_path, record)
    assert path == tmp_path / rf.EVAL
    assert path.read_text(encoding="utf-8") == json.dumps(evaluation, indent=2, ensure_ascii=False) + "\n"
    assert read_evaluation(tmp_path) == record and read_evaluation(tmp_path, rf.EVAL_ENDPOINT) is None
    (tmp_path / rf.EVAL).write_text(json.dumps({**evaluation, "format_version": 2}), encoding="utf-8")
    with pytest.raises(RunFolderError, match="format_version 2; this ftc reads version 1"):
        read_evaluation(tmp_path)


# ---- which run ------------------------------------------------------------------------------------------


def test_a_spec_means_its_newest_run(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC, encoding="utf-8")
    runs = tmp_path / rf.RUNS / "demo"
    for run_id, status in (("20250101-000000", "completed"), ("20250102-000000", "completed"), ("20250103-000000", "interrupted")):
        run_folder(runs / run_id, {**OLD_RECORD, "run_id": run_id, "status": status})
    (runs / "20250104-000000").mkdir()  # not a run: no run.json
    run_folder(runs / "20250105-000000", {"status": "completed", "unknown": 1})  # unreadable: not counted as completed

    assert newest_run(spec, tmp_path) == runs / "20250102-000000"
    assert newest_run(spec, tmp_path, completed=False) == runs / "20250105-000000"
    assert rf.run_folders(tmp_path, "demo") == [runs / name for name in ("20250101-000000", "20250102-000000", "20250103-000000", "20250105-000000")]
    with pytest.raises(RunFolderError, match=r"no completed run of demo in .*; train one with `ftc run"):
        newest_run(spec, tmp_path / "elsewhere")
    with pytest.raises(RunFolderError, match="there is no run of demo"):
        newest_run(spec, tmp_path / "elsewhere", completed=False)


def test_the_newest_run_goes_through_the_spec_loader(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[project]\nname = "demo"\n', encoding="utf-8")  # not a spec: model, data and method are missing
    with pytest.raises(RunFolderError, match="neither a run folder nor a valid spec"):
        newest_run(spec, tmp_path)
    spec.write_text(SPEC.replace("name =", "nmae ="), encoding="utf-8")  # a typo: the loader refuses it, and says so
    with pytest.raises(RunFolderError, match="nmae"):
        newest_run(spec, tmp_path)
    with pytest.raises(RunFolderError, match="cannot be read"):
        newest_run(tmp_path / "missing.toml", tmp_path)
