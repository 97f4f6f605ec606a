"""`ftc eval`: metrics against the libraries' own numbers, the diagnosis on synthetic loss curves, gates and exit
codes, and end to end on a tiny trained run and on a shortened quickstart (SmolLM2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny_runs import trained_run

from ftc.cli.main import main
from ftc.compiler.build.lock import LOCK_NAME
from ftc.runtime.evaluate import diagnose as dg
from ftc.runtime.evaluate import lmeval
from ftc.runtime.evaluate import metrics as m
from ftc.runtime.evaluate.compare import EVAL, Evaluation, check_gates, resolve_run
from ftc.runtime.runfolder import EvalRecord

REPO = Path(__file__).resolve().parents[2]


def refs(*texts: str, labels=None) -> list[m.Example]:
    return [m.Example(t, (labels or [None] * len(texts))[i]) for i, t in enumerate(texts)]


# --- metrics ------------------------------------------------------------------------------------------------


def test_exact_match_strips_whitespace():
    assert m.exact_match([" a\n", "b", "c"], refs("a", "b ", "x")).value == pytest.approx(2 / 3)


def test_rouge_bleu_chrf_match_the_libraries():
    import sacrebleu
    from rouge_score import rouge_scorer

    answers = ["the cat sat on the mat", "a quick brown fox", "hello there world"]
    references = ["the cat is on the mat", "the quick brown fox jumps", "goodbye world"]
    r = refs(*references)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = sum(scorer.score(ref, ans)["rougeL"].fmeasure for ans, ref in zip(answers, references)) / 3
    assert m.rouge_l(answers, r).value == pytest.approx(expected)
    assert m.bleu(answers, r).value == pytest.approx(sacrebleu.corpus_bleu(answers, [references]).score / 100)
    assert m.chrf(answers, r).value == pytest.approx(sacrebleu.corpus_chrf(answers, [references]).score / 100)
    assert "nrefs:1" in m.bleu(answers, r).note and "version:" in m.chrf(answers, r).note
    assert 0 < m.bleu(answers, r).value < 1


def test_json_validity_and_schema():
    answers = ['{"a": 1}', ' {"a": "x"} ', "not json", '{"b": 2}']
    assert m.json_valid(answers).value == 0.75
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert m.json_schema(answers, m.schema_validator(schema)).value == 0.25
    from jsonschema.exceptions import SchemaError

    with pytest.raises(SchemaError):
        m.schema_validator({"type": "no-such-type"})


def test_distinct_n_and_repetition_by_hand():
    answers = ["a b a b", "a b c"]
    # bigrams: ab ba ab | ab bc -> 3 distinct of 5; words: 3 distinct of 7
    assert m.distinct(answers, 2).value == pytest.approx(3 / 5)
    assert m.distinct(answers, 1).value == pytest.approx(3 / 7)
    # 4-grams of the first: abcd bcda cdab dabc abcd -> 1 repeat of 5; the second has none
    assert m.repetition(["a b c d a b c d", "x y z w"]).value == pytest.approx((1 / 5 + 0) / 2)
    assert m.repetition(["too short"]).value is None
    assert m.distinct([""], 2).value is None


def test_accuracy_with_and_without_a_label_field():
    answers = ['{"category": "billing", "x": 1}', '{"category": "bug"}', "prose"]
    references = ['{"category": "billing", "x": 2}', '{"category": "login"}', '{"category": "bug"}']
    scored = m.accuracy(answers, refs(*references, labels=["billing", "login", "bug"]), "category")
    assert scored.value == pytest.approx(1 / 3)
    # no label field: whole answers, when they form a small set
    assert m.accuracy(["yes", "no ", "no"], refs("yes", "no", "yes"), None).value == pytest.approx(2 / 3)
    many = [str(i) for i in range(25)]
    too_many = m.accuracy(many, refs(*many), None)
    assert too_many.value is None and "25 distinct" in too_many.note
    unique = m.accuracy(["a", "b"], refs('{"x": 1}', '{"x": 2}'), None)  # two answers, both different: not labels
    assert unique.value is None and "none repeats" in unique.note
    # a record field the answers never show
    hidden = m.accuracy(["a", "b"], refs("free text one", "free text two", labels=["x", "y"]), "topic")
    assert hidden.value is None and "no label to compare" in hidden.note


def test_compute_lists_distinct_with_its_companions():
    scores = m.compute(["distinct_n", "mean_length"], ["a b", "c d"], [2, 3], refs("a b", "c d"))
    assert set(scores) == {"distinct_n", "distinct_1", "repetition", "mean_length"}
    assert scores["mean_length"].value == 2.5


# --- diagnosis ----------------------------------------------------------------------------------------------


def events(train: list[tuple[int, float]], val: list[tuple[int, float]]) -> list[dict]:
    out = [{"event": "log", "step": s, "loss": v} for s, v in train]
    out += [{"event": "log", "step": s, "eval_loss": v} for s, v in val]
    return sorted(out, key=lambda e: e["step"])


HEALTHY_TRAIN = [(s, 2.5 * 0.9 ** (s / 10)) for s in range(10, 210, 10)]  # 2.25 -> 0.30, smoothly


def test_overfitting_names_the_step_where_validation_loss_turned():
    val = [(40, 1.4), (80, 0.9), (120, 0.7), (160, 0.78), (200, 0.95)]
    found = dg.diagnose(events(HEALTHY_TRAIN, val), "lora", None, {})
    (over,) = [f for f in found.findings if f.finding == "overfitting"]
    assert "lowest at step 120 (0.7000)" in over.evidence and "turn was at step 120" in over.evidence
    assert "training.max_steps = 120" in over.remedy


def test_a_healthy_curve_raises_nothing():
    val = [(40, 1.4), (80, 0.9), (120, 0.7), (160, 0.69), (200, 0.695)]  # flat within noise at the end
    answers = dg.Answers(
        references=['{"a": "one two"}', '{"a": "three four"}', '{"a": "five six"}', '{"a": "seven"}'],
        base=["Sure! Here is", "I can help", "Let me see", "Hello"],
        tuned=['{"a": "one two"}', '{"a": "three"}', '{"a": "five six"}', '{"a": "eight"}'],
        tuned_lengths=[6, 5, 6, 5],
        reference_lengths=[6, 6, 6, 5],
        max_new_tokens=64,
    )
    found = dg.diagnose(events(HEALTHY_TRAIN, val), "lora", answers, {})
    assert found.findings == []
    assert [n["finding"] for n in found.not_checked] == ["forgetting"]


def test_underfitting_when_both_losses_stay_high():
    train = [(s, 2.6 - s / 1000) for s in range(10, 110, 10)]
    found = dg.diagnose(events(train, [(50, 2.7), (100, 2.6)]), "lora", None, {})
    assert [f.finding for f in found.findings] == ["underfitting"]
    assert "above 1.0 nat per token" in found.findings[0].evidence
    dpo = dg.diagnose(events(train, []), "dpo", None, {})
    assert any(n["finding"] == "underfitting" and "DPO" in n["reason"] for n in dpo.not_checked)


def test_forgetting_needs_a_drop_beyond_the_noise():
    def task(base, tuned, se):
        return {
            "status": "ok", "kind": "general", "metric": "acc", "examples": 500,
            "base": {"acc": base, "acc_stderr": se}, "tuned": {"acc": tuned, "acc_stderr": se},
        }

    found = dg.diagnose([], "full", None, {"hellaswag": task(0.45, 0.38, 0.01)})
    assert [f.finding for f in found.findings] == ["forgetting"]
    assert "hellaswag acc fell from 0.4500" in found.findings[0].evidence
    noisy = dg.diagnose([], "full", None, {"hellaswag": task(0.45, 0.38, 0.05)})
    assert noisy.findings == []
    gone = dg.diagnose([], "full", None, {"arc_easy": {"status": "unavailable", "kind": "general", "reason": "no data"}})
    assert any(n["finding"] == "forgetting" and "arc_easy: no data" in n["reason"] for n in gone.not_checked)


def test_mode_collapse_and_format_inconsistency():
    loop = "the same thing again and " * 10
    answers = dg.Answers(
        references=['{"a": 1}', '{"a": 2}', '{"a": 3}', '{"a": 4}'],
        base=["one reply", "another reply here", "a third", "and a fourth one"],
        tuned=[loop] * 4,
        tuned_lengths=[64] * 4,
        reference_lengths=[5] * 4,
        max_new_tokens=64,
    )
    found = {f.finding: f for f in dg.diagnose([], "lora", answers, {}).findings}
    assert "seq-rep-4" in found["mode_collapse"].evidence
    assert "only 0% of the tuned answers parse" in found["format_inconsistency"].evidence
    assert "ran to max_new_tokens (64)" in found["format_inconsistency"].evidence


# --- gates --------------------------------------------------------------------------------------------------


def test_gates_report_their_numbers_and_what_could_not_be_checked():
    scores = {"base": {"exact_match": 0.1, "accuracy": None}, "tuned": {"exact_match": 0.25, "accuracy": None}}
    why = {"accuracy": "the references take 40 distinct values"}
    results = check_gates(
        ["tuned.exact_match >= base.exact_match + 0.1", "tuned.exact_match >= 0.5", "tuned.accuracy >= 0.5", "tuned.rouge_l > 0"],
        scores,
        why,
    )
    assert [r["holds"] for r in results] == [True, False, False, False]
    assert results[0]["left"] == 0.25 and results[0]["right"] == pytest.approx(0.2)
    assert results[1]["error"] is None and results[1]["right"] == 0.5
    assert "40 distinct values" in results[2]["error"]
    assert "not computed" in results[3]["error"]


@pytest.mark.parametrize(("holds", "code"), [(True, 0), (False, 1)])
def test_exit_code_follows_the_gates(tmp_path, monkeypatch, capsys, holds, code):
    from ftc.runtime.evaluate import compare as evaluate

    record = EvalRecord.model_validate({
        "format_version": 1, "examples": 1, "held_out": {"path": "v.jsonl", "source": "validation"}, "decoding": {"max_new_tokens": 8},
        "metrics": {"exact_match": {"base": 0.0, "tuned": 1.0 if holds else 0.0, "note": None}}, "lm_eval": {},
        "gates": [{"gate": "tuned.exact_match >= 0.5", "holds": holds, "left": 1.0 if holds else 0.0, "right": 0.5, "error": None}],
        "diagnosis": [], "not_checked": [],
    })
    monkeypatch.setattr(evaluate, "evaluate_run", lambda run_dir, **_: Evaluation(record, tmp_path / EVAL, holds))
    assert main(["eval", str(tmp_path)]) == code
    captured = capsys.readouterr()
    assert ("✓" if holds else "✗") in captured.out
    assert ("gate(s) failed" in captured.err) == (not holds)


def test_usage_errors(tmp_path):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert main(["eval", str(tmp_path), "--max-examples", "0"]) == 2
    assert main(["eval", str(tmp_path), "--endpoint-model", "m"]) == 2  # goes with --endpoint


def test_endpoint_refusals_before_any_model_loads(tmp_path, monkeypatch):
    from ftc.runtime.evaluate.endpoint import Endpoint, EndpointError, open_endpoint

    with pytest.raises(EndpointError, match="not an http"):
        open_endpoint("localhost:8000", None, None, None)
    monkeypatch.delenv("FTC_NO_SUCH_KEY", raising=False)
    with pytest.raises(EndpointError, match=r"\$FTC_NO_SUCH_KEY is not set"):
        open_endpoint("http://127.0.0.1:9/v1", None, "FTC_NO_SUCH_KEY", None)
    with pytest.raises(EndpointError, match="cannot be reached"):
        open_endpoint("http://127.0.0.1:9/v1", None, None, None)  # port 9 (discard): nothing listens
    shown = Endpoint("http://user:secret@example.test:8443/x", "m", None, None, {}).shown
    assert shown == "http://example.test:8443/x" and "secret" not in shown


def test_requests_stay_within_the_servers_context():
    from ftc.runtime.evaluate.endpoint import Endpoint, room

    served = Endpoint("http://127.0.0.1:8000", "m", None, None, {"max_model_len": 256})
    assert room(served, 100, 256) == 156 and room(served, 10, 64) == 64 and room(served, 300, 64) == 0
    assert room(Endpoint("http://127.0.0.1:8000", "m", None, None, {}), 10_000, 64) == 64  # no limit given


# --- lm-eval ------------------------------------------------------------------------------------------------


def test_a_task_without_its_data_is_unavailable(tmp_path):
    lmeval.offline()
    (tmp_path / "gone.yaml").write_text(
        "task: ftc_test_gone\ndataset_path: ftc-test-nobody/no-such-dataset\ntest_split: test\n"
        "output_type: generate_until\ndoc_to_text: q\ndoc_to_target: a\n",
        encoding="utf-8",
    )
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    reason = lmeval.check_available(manager, "ftc_test_gone")
    assert "could not load it offline" in reason and "ftc-test-nobody/no-such-dataset" in reason
    assert "not a registered task" in lmeval.check_available(manager, "no_such_task_anywhere")


# --- end to end ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory, tiny_model):
    return trained_run(tmp_path_factory, tiny_model, "lora")


def _copy_run(run_dir: Path, name: str, evaluation: dict) -> Path:
    """A copy of a trained run whose plan asks for `evaluation` (the shared run folder stays as it was)."""
    copy = run_dir.parent / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy)
    lock = json.loads((copy / LOCK_NAME).read_text())
    lock["evaluation"].update(evaluation)
    (copy / LOCK_NAME).write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return copy


MC_TASK = """task: ftc_test_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: question
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def test_eval_end_to_end_on_a_tiny_run(tiny_lora, tmp_path, monkeypatch, capsys):
    run_dir = _copy_run(
        tiny_lora,
        "eval-e2e",
        {
            "metrics": ["exact_match", "json_valid", "rouge_l", "distinct_n", "mean_length"],
            "max_new_tokens": 8,
            "lm_eval_tasks": ["ftc_test_mc", "ftc_test_gone"],
            "gates": ["tuned.json_valid >= 0.9", "tuned.ftc_test_mc >= base.ftc_test_mc - 1"],
        },
    )
    # two general tasks from a local folder instead of lm-eval's own (indexing those takes seconds): one whose
    # data is here, one whose data would have to be downloaded
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "mc.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"Ticket {i}: refund?", "choices": [" yes", " no"], "label": i % 2}) + "\n" for i in range(4)),
        encoding="utf-8",
    )
    (tasks / "mc.yaml").write_text(MC_TASK.format(data=data), encoding="utf-8")
    (tasks / "gone.yaml").write_text(
        "task: ftc_test_gone\ndataset_path: ftc-test-nobody/no-such-dataset\ntest_split: test\n"
        "output_type: generate_until\ndoc_to_text: q\ndoc_to_target: a\n",
        encoding="utf-8",
    )
    from lm_eval.tasks import TaskManager

    monkeypatch.setattr(
        lmeval, "task_manager", lambda task, general: TaskManager(include_path=[str(task.folder), str(tasks)], include_defaults=False)
    )

    code = main(["eval", str(run_dir), "--max-examples", "3"])
    out = capsys.readouterr()
    assert code == 1, out.err  # a random model writes no JSON: the json_valid gate fails
    assert "gate(s) failed: tuned.json_valid >= 0.9" in out.err
    assert "✗ tuned.json_valid >= 0.9" in out.out and "✓ tuned.ftc_test_mc >= base.ftc_test_mc - 1" in out.out

    record = json.loads((run_dir / EVAL).read_text())
    assert record["format_version"] == 1 and record["run"] == "eval-e2e" and len(record["plan_hash"]) == 64
    assert record["examples"] == 3 and record["held_out"] == {"source": "validation", "path": "data/val.jsonl", "max_examples": 3}
    decoding = record["decoding"]
    assert decoding["do_sample"] is False and decoding["max_new_tokens"] == 8 and decoding["stop_token_ids"]
    assert len(decoding["chat_template_sha256"]) == 64
    for name in ("exact_match", "json_valid", "rouge_l", "distinct_n", "distinct_1", "repetition", "mean_length"):
        assert set(record["metrics"][name]) >= {"base", "tuned", "note"}
    assert record["metrics"]["exact_match"]["base"] == 0.0 and record["metrics"]["json_valid"]["reference"] == 1.0
    assert 0 <= record["metrics"]["mean_length"]["tuned"] <= 8
    assert record["versions"]["rouge-score"] and record["versions"]["sacrebleu"] == "2.6.0" and record["versions"]["lm-eval"]

    held = record["lm_eval"][lmeval.HELDOUT_TASK]
    assert held["status"] == "ok" and held["examples"] == 3
    assert held["base"]["exact_match"] == 0.0 and held["tuned"]["exact_match"] == 0.0
    # the harness, given the same prompts, stop strings and budget, answers exactly as ftc did
    assert held["answers_agree_with_ftc"] == {"base": "3/3", "tuned": "3/3"}
    assert (run_dir / "eval" / "lm_eval" / "ftc_heldout.yaml").is_file()
    assert len((run_dir / "eval" / "lm_eval" / "heldout.jsonl").read_text().splitlines()) == 3
    mc = record["lm_eval"]["ftc_test_mc"]
    assert mc["status"] == "ok" and mc["metric"] == "acc" and mc["kind"] == "general"
    assert 0 <= mc["base"]["acc"] <= 1 and "acc_stderr" in mc["tuned"]
    gone = record["lm_eval"]["ftc_test_gone"]
    assert gone["status"] == "unavailable" and gone["base"] is None and "offline" in gone["reason"]

    assert [g["holds"] for g in record["gates"]] == [False, True]
    assert any("longer than max_new_tokens (8" in n for n in record["notes"])
    assert record["gates"][0]["left"] == record["metrics"]["json_valid"]["tuned"]
    findings = {f["finding"] for f in record["diagnosis"]}
    assert "underfitting" in findings and "format_inconsistency" in findings  # 2 steps on a random model
    assert len(record["answers"]) == 3
    first = record["answers"][0]
    assert first["source"] == "data/val.jsonl:1" and first["reference"].startswith('{"category"')
    assert isinstance(first["base"], str) and isinstance(first["tuned"], str)


def test_batched_answers_equal_one_at_a_time(tiny_lora):
    from ftc.runtime.generate import generate_answers, prompt_of, stop_token_ids
    from ftc.runtime.heldout import held_out
    from ftc.runtime.models import (
        attach_adapter,
        load_tokenizer,
        load_trained_base,
        locked_chat_template,
        open_run,
        placement,
    )

    run = open_run(tiny_lora)
    tokenizer = load_tokenizer(run)
    template, _ = locked_chat_template(run)
    texts = [prompt_of(r.value, "chat", tokenizer, template).text for r in held_out(run, 4).records]
    stops = stop_token_ids(tokenizer, template)
    tuned = attach_adapter(run, load_trained_base(run, placement(run.lock))).merge_and_unload()
    progress = []
    batched = generate_answers(tuned, tokenizer, texts, stops, 12, batch_size=3, done=progress.append)
    assert batched == [generate_answers(tuned, tokenizer, [t], stops, 12, batch_size=1)[0] for t in texts]
    assert progress == [3, 4] and all(0 <= a.tokens <= 12 for a in batched)


def test_without_the_base_model(tiny_lora, capsys):
    run_dir = _copy_run(
        tiny_lora, "eval-tuned-only", {"compare_base": False, "max_new_tokens": 4, "metrics": ["exact_match"], "gates": ["tuned.exact_match >= 0"]}
    )
    assert main(["eval", str(run_dir), "--max-examples", "1"]) == 0, capsys.readouterr().err
    record = json.loads((run_dir / EVAL).read_text())
    row = record["metrics"]["exact_match"]
    assert row["base"] is None and row["tuned"] == 0.0 and "compare_base = false" in row["note"]
    held = record["lm_eval"][lmeval.HELDOUT_TASK]
    assert held["base"] is None and held["tuned"]["exact_match"] == 0.0
    assert record["answers"][0]["base"] is None and isinstance(record["answers"][0]["tuned"], str)
    assert record["gates"] == [{"gate": "tuned.exact_match >= 0", "holds": True, "left": 0.0, "right": 0.0, "error": None}]


def test_a_spec_means_its_newest_completed_run(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[project]\nname = "demo"\n[model]\nbase = "m"\n[data]\ntrain = "t.jsonl"\n[method]\nkind = "full"\n', encoding="utf-8")
    runs = tmp_path / "runs" / "demo"
    for run_id, status in (("20250101-000000", "completed"), ("20250102-000000", "completed"), ("20250103-000000", "interrupted")):
        (runs / run_id).mkdir(parents=True)
        (runs / run_id / "run.json").write_text(json.dumps({"status": status}))
    assert resolve_run(spec, root=tmp_path) == runs / "20250102-000000"
    from ftc.runtime.runfolder import RunFolderError

    with pytest.raises(RunFolderError, match="no completed run of demo"):
        resolve_run(spec, root=tmp_path / "elsewhere")


@pytest.mark.slow
def test_eval_on_a_shortened_quickstart(tmp_path, monkeypatch, capsys, request):
    """The quickstart spec, cut to 2 small steps and 4 examples: trains SmolLM2 with `ftc run`, then `ftc eval SPEC`."""
    import tomllib

    source = (REPO / "specs" / "quickstart.toml").read_text(encoding="utf-8")
    spec = tomllib.loads(source)
    data = tmp_path / "data" / "ticket_triage"
    data.mkdir(parents=True)
    for name, keep in (("train.jsonl", 64), ("val.jsonl", 8)):  # less to tokenize, and a shorter final validation
        lines = (REPO / "specs" / "data" / "ticket_triage" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (data / name).write_text("".join(lines[:keep]), encoding="utf-8")
    text = source.replace("max_steps = 24 ", "max_steps = 2 ").replace("batch_size = 16", "batch_size = 4")
    text = text.replace("micro_batch_size = 8 ", "micro_batch_size = 4 ")
    text = text.replace("[evaluation]\n", '[evaluation]\nmax_examples = 4\nmax_new_tokens = 24\nlm_eval_tasks = []\n', 1)
    text = text.replace(f"metrics = {json.dumps(spec['evaluation']['metrics'])}", 'metrics = ["json_valid", "rouge_l", "exact_match", "accuracy", "bleu", "chrf", "distinct_n", "mean_length"]')
    assert "max_steps = 2 " in text and "max_examples = 4" in text and '"accuracy"' in text
    (tmp_path / "quickstart.toml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    # One thread, in the training child and here: `make test` runs two workers on two cores (see tiny_runs.py).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    assert main(["compile", "quickstart.toml"]) == 0, capsys.readouterr().err
    assert main(["run", "quickstart.toml", "--samples", "0"]) == 0, capsys.readouterr().err
    capsys.readouterr()

    code = main(["eval", "quickstart.toml", "--json"])
    out = capsys.readouterr()
    record = json.loads(out.out)
    assert code in (0, 1)
    assert record["examples"] == 4 and record["decoding"]["max_new_tokens"] == 24
    assert record["decoding"]["stop_token_ids"] == [2]  # SmolLM2's <|im_end|>, its EOS and end of turn
    for name, row in record["metrics"].items():
        for side in ("base", "tuned"):
            assert row[side] is None or isinstance(row[side], float), (name, row)
    assert record["metrics"]["accuracy"]["base"] is not None  # label_field "category" is a key of the JSON answers
    held = record["lm_eval"][lmeval.HELDOUT_TASK]
    assert held["status"] == "ok" and held["examples"] == 4
    assert held["base"]["exact_match"] == record["metrics"]["exact_match"]["base"]
    assert [g["gate"] for g in record["gates"]] == spec["evaluation"]["gates"]
    assert any("longer than max_new_tokens (24" in n for n in record["notes"])  # the answers are about 30 tokens
    assert code == (0 if all(g["holds"] for g in record["gates"]) else 1)
    run_dir = resolve_run(Path("quickstart.toml"))
    assert json.loads((run_dir / EVAL).read_text()) == record
