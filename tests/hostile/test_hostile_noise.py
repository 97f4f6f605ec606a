"""What a newcomer sees on the terminal (issue 14, defect 11): the quickstart's commands print ftc's own lines and
nothing else. The notices the libraries print that a user can do nothing about are silenced each by name
(templates/load_model.py: quiet_known_notices, and load_dense for the GGUF unpacking bar); a real warning still
shows.

The quickstart's commands run as a user runs them, as child processes, on the tiny Llama with a quickstart-shaped
spec. Every line they write to stderr, and every line the training script printed (train.log, which `ftc run`
shows), must have one of the shapes ftc writes: a new library notice fails here until it is silenced by name or
ftc says it in its own words.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import modeling_gguf_pytorch_utils
from transformers.utils import logging as hf_logging

from ftc.cli.common import quiet_model_loading
from ftc.templates.load_model import KERNEL_FETCH_NOTICES, load_dense, quiet_known_notices

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "specs" / "data" / "ticket_triage"
FTC = [sys.executable, "-m", "ftc.cli"]
PEFT_SAVE = "peft.utils.save_and_load"
MODELING_UTILS = "transformers.modeling_utils"

# The shapes of the lines ftc itself writes to stderr, and the training script to its output.
FTC_STDERR = [
    r"\S+\.toml:\d+:\d+: [\w.\[\]]+: (warning|error): .+",  # a diagnostic: file:line:col: key: severity: message
    r" *\d* \| .*",  # its source line, and the caret under the value
    r" *= hint: .+",
    r"\d+ (warnings?|errors?)(, \d+ warnings?)?",
    r"  [a-z][^()=]*",  # a step of a long verb, off a terminal ("  loading the base model", "  tuned: 1/1 answers")
]
SCRIPT_OUTPUT = [
    r"(train|validation): \d+ examples, \d+ tokens, \d+ carry loss",
    r"saved .+/final",
    r"resuming from checkpoint-\d+",
]


def _unexpected(text: str, shapes: list[str]) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not any(re.fullmatch(s, line) for s in shapes)]


def _project(root: Path, tiny_model: Path) -> Path:
    """A quickstart-shaped project on the tiny Llama: LoRA on chat data, a validation file, 2 steps."""
    (root / "data").mkdir(parents=True)
    train = DATA.joinpath("train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    val = DATA.joinpath("val.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "data" / "train.jsonl").write_text("".join(train[:8]), encoding="utf-8")
    (root / "data" / "val.jsonl").write_text("".join(val[:3]), encoding="utf-8")
    spec = root / "quick.toml"
    spec.write_text(
        f"""
[project]
name = "quick"
seed = 42

[model]
base = "{os.path.relpath(tiny_model, root)}"

[data]
train = "data/train.jsonl"
validation = "data/val.jsonl"
format = "chat"
max_length = 1024
train_on = "completions"
packing = false

[method]
kind = "lora"
r = 4
lora_alpha = 8
target_modules = ["q_proj", "v_proj"]

[training]
max_steps = 2
learning_rate = 1e-3
batch_size = 4
micro_batch_size = 4
logging_steps = 1
report_to = []

[hardware]
accelerator = "cpu"

[evaluation]
metrics = ["json_valid", "rouge_l"]
""",
        encoding="utf-8",
    )
    return spec


def _ftc(root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", COLUMNS="200")
    result = subprocess.run(
        [*FTC, *args], cwd=root, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    assert result.returncode == 0, f"ftc {' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, tiny_model) -> dict[str, str]:
    """The quickstart's commands, run once: what each wrote to stderr, and what the training script printed."""
    root = tmp_path_factory.mktemp("quickstart")
    spec = _project(root, tiny_model)
    seen = {"compile": _ftc(root, "compile", spec.name).stderr, "run": _ftc(root, "run", spec.name).stderr}
    (run_dir,) = (root / "runs" / "quick").iterdir()
    seen["the training script"] = (run_dir / "train.log").read_text(encoding="utf-8")
    run = str(run_dir.relative_to(root))
    seen["merge"] = _ftc(root, "merge", run, "--examples", "1").stderr
    seen["eval"] = _ftc(root, "eval", run, "--max-examples", "1").stderr
    return seen


def test_the_quickstart_commands_print_only_ftcs_own_lines(quickstart):
    noise = {verb: _unexpected(text, FTC_STDERR) for verb, text in quickstart.items() if verb != "the training script"}
    assert not any(noise.values()), noise


def test_the_training_script_prints_only_its_own_lines(quickstart):
    script = quickstart["the training script"]
    noise = [line for line in _unexpected(script, SCRIPT_OUTPUT) if not line.startswith(KERNEL_FETCH_NOTICES[0])]
    assert not noise, script


def test_the_training_script_prints_no_bitsandbytes_kernel_notice(quickstart):
    assert KERNEL_FETCH_NOTICES[0] not in quickstart["the training script"]


def test_ftcs_own_warnings_still_show(quickstart):
    assert "data.train: warning: only 8 training examples" in quickstart["compile"]


# (message, category, module): the two known ones, then warnings that differ from them in one respect each
WARNINGS = [
    ("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, MODELING_UTILS),
    ("Could not find a config file in /m - will assume that the vocabulary was not modified.", UserWarning, PEFT_SAVE),
    ("`use_cache` is deprecated and will be removed in v6.", FutureWarning, MODELING_UTILS),
    ("`is_gradient_checkpointing` is deprecated", FutureWarning, "torch.serialization"),
    ("Could not find a config file in /m", UserWarning, PEFT_SAVE),
    ("Could not find a config file in /m - will assume that the vocabulary was not modified.", UserWarning, "peft.x"),
]


def test_other_warnings_of_the_same_libraries_still_show():
    """quiet_model_loading silences the known notices by library and message. Before, it hid every FutureWarning,
    every transformers warning and every bitsandbytes warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_model_loading()
        for message, category, module in WARNINGS:
            warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)
    assert [str(w.message) for w in caught] == [message for message, _, _ in WARNINGS[2:]]

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    for logger in (logging.getLogger("bitsandbytes.backends.cpu.ops"), hf_logging.get_logger(MODELING_UTILS)):
        logger.addHandler(handler)
        try:
            logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: offline")
            logger.warning("Some weights of the model checkpoint were not used")
        finally:
            logger.removeHandler(handler)
    assert [(r.name, r.getMessage()) for r in records] == [
        ("bitsandbytes.backends.cpu.ops", "Some weights of the model checkpoint were not used"),
        ("transformers.modeling_utils", "Failed to load CPU gemm_4bit_forward from kernels-community: offline"),
        ("transformers.modeling_utils", "Some weights of the model checkpoint were not used"),
    ]


def _write_tiny_gguf(folder: Path) -> Path:
    """A one-layer Llama as a GGUF file of float32 tensors, the way llama.cpp names them (no tokenizer)."""
    hidden, ffn, vocab = 64, 128, 32
    folder.mkdir()
    path = folder / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // 2)
    writer.add_vocab_size(vocab)
    rng = np.random.default_rng(0)
    shapes = {"token_embd": (vocab, hidden), "output_norm": (hidden,), "blk.0.attn_norm": (hidden,)}
    shapes |= {f"blk.0.attn_{n}": (hidden, hidden) for n in ("q", "k", "v", "output")}
    shapes |= {"blk.0.ffn_norm": (hidden,), "blk.0.ffn_gate": (ffn, hidden), "blk.0.ffn_up": (ffn, hidden)}
    shapes |= {"blk.0.ffn_down": (hidden, ffn)}
    for name, shape in shapes.items():
        writer.add_tensor(f"{name}.weight", (rng.standard_normal(shape) * 0.02).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return _write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "base")


def test_unpacking_a_gguf_base_draws_no_bar(tiny_gguf, capfd):
    """transformers draws its unpacking bar through tqdm directly, past its own switch; for the quickstart's
    SmolLM2 that bar was 272 lines of a log each time the model loaded."""
    capfd.readouterr()
    load_dense(str(tiny_gguf.parent), torch.float32, None, {"gguf_file": tiny_gguf.name})
    assert "GGUF tensors" not in capfd.readouterr().err
    assert not isinstance(modeling_gguf_pytorch_utils.tqdm, partial), "the bar is switched off for that load only"


def test_wrapping_and_saving_an_adapter_on_a_gguf_base_warns_nothing(tiny_gguf, tmp_path):
    """What the script does with the quickstart's base: peft wraps it (and reads transformers' deprecated
    `is_gradient_checkpointing`), then saves the adapter (and finds no config.json next to the GGUF file)."""
    model = load_dense(str(tiny_gguf.parent), torch.float32, None, {"gguf_file": tiny_gguf.name})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_notices()
        peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
        peft_model.save_pretrained(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert [str(w.message) for w in caught] == []
