"""The crash matrix (issue 14): `kill -9` at each phase, then the next command. The next command either succeeds
or refuses with a clear reason (no traceback); it never trusts a half-written file, and no sealed checkpoint is
lost.

A kill is real wherever the phase can be hit every time: the command runs as a process, the test watches the
folder for the mark of the phase and SIGKILLs ftc and everything it started at once (crash_project.kill_when),
so that nothing records how it ended. Where the phase lasts microseconds (two renames; the write of a small
JSON file), the test leaves exactly what a kill there leaves, with a process id that no process has:

  phase                                   kill   mark watched for
  compile, writing the cleaned data       real   build/<name>/data/.train.jsonl.<pid>.<random>.tmp
  run, before the first checkpoint        real   the first "step" event in events.jsonl
  run, writing a checkpoint               real   checkpoint-4/ appears (its seal comes last)
  run, saving the final model             real   final/ appears; then cut short as a kill inside the save does
  merge, writing merged/                  real   .merged.tmp-<pid>/config.json (then it is loaded and verified)
  merge, replacing an older merged/       made   .merged.old-<pid>/ and .merged.tmp-<pid>/, no merged/
  eval, before eval.json                  real   eval/lm_eval/ftc_heldout.yaml
  eval and report, writing their file     made   .eval.json.<pid>.tmp and .report.html.<pid>.tmp, cut short
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from attack import ftc_in_process
from crash_project import (
    DATA,
    MAX_STEPS,
    events,
    kill_when,
    only_run,
    record,
    sealed,
    start,
    write_project,
)
from safetensors.torch import load_file

CRASHED: dict[str, Path] = {}  # the run the tests below go on with, once it completed


def refused(outcome, *words: str) -> None:
    """The command refused, with a message that holds `words`, and no traceback."""
    assert outcome.traceback is None, str(outcome)
    assert outcome.code in (1, 2), str(outcome)
    for word in words:
        assert word in outcome.stdout + outcome.stderr, str(outcome)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("crash-project")
    write_project(root, tiny_model)
    compiled = ftc_in_process("compile", "spec.toml", cwd=root)
    assert compiled.code == 0, str(compiled)
    return root


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the scripts `ftc run` starts in-process, on two shared cores


def fresh_runs(root: Path) -> None:
    shutil.rmtree(root / "runs", ignore_errors=True)


# ---- compile: killed while writing the cleaned copy of the data -------------------------------------------


def many_examples(n: int) -> list[str]:
    """`n` distinct chat examples (dedup keeps them all), enough that writing their cleaned copy takes a while."""
    first = json.loads(DATA.joinpath("train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    lines = []
    for i in range(n):
        first["messages"][-2]["content"] = f"ticket number {i}: the app crashes at login"
        lines.append(json.dumps(first) + "\n")
    return lines


def test_kill_while_compile_writes_the_cleaned_data_then_compile_and_run(tmp_path, tiny_model):
    write_project(tmp_path, tiny_model, many_examples(1500))
    data = tmp_path / "build" / "crash" / "data"
    process = start(tmp_path, "compile", "spec.toml")
    kill_when(process, lambda: any(data.glob(".train.jsonl.*.tmp")))
    (partial,) = data.glob(".train.jsonl.*.tmp")  # cut short: the kill hit the write
    assert not (data / "train.jsonl").exists() and not (tmp_path / "build" / "crash" / "ftc.lock.json").exists()

    # the next commands: the half-written copy is never taken for the build
    check = ftc_in_process("compile", "spec.toml", "--check", cwd=tmp_path)
    refused(check, "stale")
    run = ftc_in_process("run", "spec.toml", cwd=tmp_path)
    refused(run, "ftc.lock.json is missing", "run `ftc compile spec.toml` first")
    # compiling again writes the build whole and clears what the killed compile left (before: the leftover stayed,
    # and every later `ftc run` refused the build, saying that "ftc did not write it")
    again = ftc_in_process("compile", "spec.toml", cwd=tmp_path)
    assert again.code == 0 and again.traceback is None, str(again)
    assert not partial.exists()
    check = ftc_in_process("compile", "spec.toml", "--check", cwd=tmp_path)
    assert check.code == 0 and "is up to date" in check.stdout, str(check)


# ---- run: killed before the first checkpoint ----------------------------------------------------------------


def test_kill_before_the_first_checkpoint_then_merge_eval_report_resume(project):
    fresh_runs(project)
    process = start(project, "run", "spec.toml", "--samples", "0")

    def training() -> bool:
        found = list((project / "runs" / "crash").glob("*/events.jsonl"))
        return bool(found) and any(e.get("event") == "step" for e in events(found[0].parent))

    kill_when(process, training)
    run_dir = only_run(project)
    assert not sealed(run_dir), "a checkpoint was sealed before the kill: the phase was missed"
    assert record(run_dir)["status"] == "running"  # nobody was left to record the crash

    # before: merge and eval said "resume it with `ftc run --resume`", which then refused: nothing to resume
    for verb in ("merge", "eval"):
        refused(ftc_in_process(verb, str(run_dir), cwd=project), "did not complete", "it sealed no checkpoint", "start a new run with `ftc run spec.toml`")
    report = ftc_in_process("report", str(run_dir), cwd=project)
    assert report.code == 0 and report.traceback is None, str(report)
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "killed" in page and ">running<" not in page  # before: "running", for a run no process runs any more
    resume = ftc_in_process("run", "spec.toml", "--resume", str(run_dir), "--samples", "0", cwd=project)
    refused(resume, "holds no complete checkpoint", "start a new run instead")  # at once, without starting the script
    assert record(run_dir)["status"] == "running" and not (run_dir / "final").exists()  # a refusal changes nothing


# ---- run: killed while a checkpoint is written, then while the final model is saved --------------------------


def torn(folder: Path) -> bool:
    """A checkpoint folder the kill left unsealed."""
    return folder.is_dir() and not (folder / "ftc-checkpoint.json").exists()


def test_kill_while_a_checkpoint_is_written_then_while_the_final_model_is_saved(project):
    fresh_runs(project)
    # a real kill as soon as checkpoint-4 appears: the trainer is still writing its files and the seal is not there
    process = start(project, "run", "spec.toml", "--samples", "0")
    checkpoint = lambda: next((project / "runs" / "crash").glob("*/checkpoints/checkpoint-4"), None)
    kill_when(process, lambda: checkpoint() is not None)
    run_dir = only_run(project)
    assert torn(checkpoint()), "checkpoint-4 was sealed before the kill landed: the phase was missed"
    before = sealed(run_dir)
    assert list(before) == ["checkpoint-2"]

    for verb in ("merge", "eval"):
        refused(ftc_in_process(verb, str(run_dir), cwd=project), "did not complete", "resume it from its last sealed checkpoint (checkpoint-2)")

    # resume, and kill it again as soon as the final model starts to be written
    process = start(project, "run", "spec.toml", "--resume", str(run_dir), "--samples", "0")
    kill_when(process, lambda: (run_dir / "final").exists())
    assert record(run_dir)["status"] == "running"
    assert (run_dir / "checkpoints" / "incomplete-checkpoint-4").is_dir()  # kept aside, never resumed from
    after = sealed(run_dir)
    assert {k: v for k, v in after.items() if k in before} == before, "a sealed checkpoint was lost or changed"
    assert f"checkpoint-{MAX_STEPS}" in after
    # What a kill inside the save leaves: the adapter cut short, no tokenizer yet. Made explicit here, since the
    # save of the tiny adapter takes a few milliseconds and the kill may land just after it.
    weights = run_dir / "final" / "adapter_model.safetensors"
    if weights.is_file():
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (run_dir / "final" / name).unlink(missing_ok=True)

    # before: merge and eval took final/ as it was (a run killed while saving it)
    for verb in ("merge", "eval"):
        refused(ftc_in_process(verb, str(run_dir), cwd=project), "did not complete", f"resume it from its last sealed checkpoint (checkpoint-{MAX_STEPS})")
    resumed = ftc_in_process("run", "spec.toml", "--resume", str(run_dir), "--samples", "0", cwd=project)
    assert resumed.code == 0 and resumed.traceback is None, str(resumed)
    assert f"resuming from checkpoint-{MAX_STEPS}" in resumed.stdout
    assert record(run_dir)["status"] == "completed"
    assert {k: v for k, v in sealed(run_dir).items() if k in after} == after
    assert load_file(str(weights))  # written whole again
    CRASHED["run"] = run_dir


@pytest.fixture
def completed(project):
    if "run" not in CRASHED:
        pytest.skip("needs the run completed by the test above")
    return project, CRASHED["run"]


def test_a_damaged_final_model_is_refused_with_a_reason(completed, tmp_path):
    """A run that says "completed" but whose adapter was cut short since (a copy made while it was written, a
    disk that lost it). Before: merge and eval ended in safetensors' traceback."""
    root, run_dir = completed
    copy = run_dir.with_name("damaged-copy")
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    try:
        weights = copy / "final" / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
        for verb in ("merge", "eval"):
            refused(ftc_in_process(verb, str(copy), cwd=root), "final/adapter_model.safetensors", "cannot be read")
        assert not (copy / "merged").exists() and not (copy / "eval.json").exists()
    finally:
        shutil.rmtree(copy)


# ---- merge: killed while writing merged/ -------------------------------------------------------------------


def test_kill_while_merging_then_serve_and_merge_again(completed):
    root, run_dir = completed
    process = start(root, "merge", str(run_dir))
    kill_when(process, lambda: any(run_dir.glob(".merged.tmp-*/config.json")))  # merged weights being written or checked
    assert not (run_dir / "merged").exists() and "merge" not in record(run_dir)

    serve = ftc_in_process("serve", str(run_dir), cwd=root)
    refused(serve, "ftc merge")  # nothing half-merged is served
    merged = ftc_in_process("merge", str(run_dir), cwd=root)
    assert merged.code == 0 and merged.traceback is None, str(merged)
    assert record(run_dir)["merge"]["status"] == "verified"
    assert not list(run_dir.glob(".merged*"))  # what the killed merge left is gone
    weights = (run_dir / "merged" / "model.safetensors").read_bytes()

    # killed while replacing merged/ with a new merge: merged/ was renamed aside, the new one not yet in place
    # (a window of two renames, too short to hit: the state is made here as the kill leaves it, with a dead pid)
    dead = 2**22 + 1  # above pid_max's default: no process has it
    (run_dir / "merged").rename(run_dir / f".merged.old-{dead}")
    shutil.copytree(run_dir / f".merged.old-{dead}", run_dir / f".merged.tmp-{dead}")
    refused(ftc_in_process("serve", str(run_dir), cwd=root), "ftc merge")
    merged = ftc_in_process("merge", str(run_dir), cwd=root)
    assert merged.code == 0 and merged.traceback is None, str(merged)
    assert (run_dir / "merged" / "model.safetensors").read_bytes() == weights
    # before: .merged.old-<pid>/ (a whole model) stayed behind for good
    assert not list(run_dir.glob(".merged*")), list(run_dir.glob(".merged*"))


# ---- eval and report: killed while writing eval.json and report.html ---------------------------------------


def test_kill_while_evaluating_then_report_and_eval_again(completed):
    root, run_dir = completed
    process = start(root, "eval", str(run_dir))
    kill_when(process, lambda: (run_dir / "eval" / "lm_eval" / "ftc_heldout.yaml").exists())
    assert not (run_dir / "eval.json").exists()
    # a kill inside the write of eval.json leaves its temporary copy cut short (made here: the write takes
    # microseconds); the same for report.html
    dead = 2**22 + 1  # above pid_max's default: no process has it
    (run_dir / f".eval.json.{dead}.tmp").write_text('{"format_version": 1, "metrics": {"exact', encoding="utf-8")
    (run_dir / f".report.html.{dead}.tmp").write_text("<html><body><h1>cut", encoding="utf-8")

    report = ftc_in_process("report", str(run_dir), cwd=root)
    assert report.code == 0 and report.traceback is None, str(report)
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.rstrip().endswith("</html>") and "exact_match" not in page  # the cut copy is not read
    evaluated = ftc_in_process("eval", str(run_dir), cwd=root)
    assert evaluated.code == 0 and evaluated.traceback is None, str(evaluated)
    whole = (run_dir / "eval.json").read_text(encoding="utf-8")
    assert json.loads(whole)["format_version"] == 1
    report = ftc_in_process("report", str(run_dir), cwd=root)
    assert report.code == 0 and "exact_match" in (run_dir / "report.html").read_text(encoding="utf-8")
    assert not list(run_dir.glob(".*.tmp"))  # before: every killed write left its copy for good

    # eval.json itself cut short (copied while it was written, or by an older ftc): named, never read as whole
    (run_dir / "eval.json").write_text(whole[: len(whole) // 2], encoding="utf-8")
    report = ftc_in_process("report", str(run_dir), cwd=root)
    assert report.code == 0 and report.traceback is None, str(report)
    assert "eval.json is not valid JSON" in report.stderr and "run `ftc eval" in report.stderr, str(report)
    assert "exact_match" not in (run_dir / "report.html").read_text(encoding="utf-8")


# ---- a dense copy of the base (QLoRA or a GGUF base): saved whole or not at all ------------------------------


def test_a_dense_base_copy_killed_midway_is_never_trusted(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM

    from ftc.runtime.models import save_whole

    dead = 2**22 + 1  # above pid_max's default: no process has it
    folder = tmp_path / "base-dequantized"
    partial = tmp_path / f".base-dequantized.tmp-{dead}"  # what a kill inside save_pretrained leaves
    partial.mkdir()
    (partial / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    save_whole(AutoModelForCausalLM.from_pretrained(tiny_model), folder)
    assert not partial.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["base-dequantized"]
    assert load_file(folder / "model.safetensors")  # whole: every tensor reads

