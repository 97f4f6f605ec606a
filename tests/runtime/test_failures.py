"""Running out of disk or memory: a clear message, the right exit status, and nothing already saved lost.

Both failures are real: the disk is full because the kernel says so (a file that is written through a
link to /dev/full, which answers every write with ENOSPC), and memory runs out because the address space
of the training process is capped with RLIMIT_AS. The generated script runs by hand here, as a user would.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from test_run import DATA, write_project

from ftc.compiler.build.compile import compile_build, write_build


def build_project(root: Path, tiny_model: Path, train_records: list | None = None, **changes: str) -> Path:
    """The test_run project with `changes` made to its spec (and `train_records` as its training data), compiled;
    returns its train.py."""
    spec = write_project(root, tiny_model)
    if train_records is not None:
        (root / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_records), encoding="utf-8")
    text = spec.read_text(encoding="utf-8")
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    spec.write_text(text, encoding="utf-8")
    write_build(compile_build(spec, root=root))
    return root / "build" / "tiny-run" / "train.py"


def train(script: Path, output: Path, *args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, str(script), "--output-dir", str(output), "--no-progress-bar", *args],
        capture_output=True, text=True, timeout=600, preexec_fn=cap_memory if limit_bytes else None,
        env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"),
    )


def last_event(output: Path) -> dict:
    return json.loads((output / "events.jsonl").read_text(encoding="utf-8").splitlines()[-1])


def test_a_full_disk_while_saving_is_explained_and_loses_nothing(tmp_path, tiny_model):
    script = build_project(tmp_path, tiny_model, **{"max_steps = 30": "max_steps = 4", "save_steps = 5": "save_steps = 2"})
    output = tmp_path / "run"
    (output / "final").mkdir(parents=True)
    (output / "final" / "adapter_config.json").symlink_to("/dev/full")  # every write to it fails with ENOSPC

    full = train(script, output)
    assert full.returncode == 4, full.stderr[-3000:]
    assert f"the disk under {output} is full ([Errno 28] No space left on device)" in full.stderr
    assert "Sealed checkpoints are intact" in full.stderr
    assert last_event(output)["status"] == "disk_full"
    sealed = sorted(p.name for p in (output / "checkpoints").glob("checkpoint-*") if (p / "ftc-checkpoint.json").is_file())
    assert sealed == ["checkpoint-2", "checkpoint-4"]

    (output / "final" / "adapter_config.json").unlink()  # space is free again
    resumed = train(script, output, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint-4" in resumed.stdout
    assert (output / "final" / "adapter_model.safetensors").is_file() and last_event(output)["status"] == "completed"


def test_out_of_memory_is_explained_with_the_estimate_and_what_to_change(tmp_path, tiny_model):
    # A micro batch of 32 examples of about 1,950 tokens, without packing, with eager attention: its attention
    # probabilities alone take 1 GiB per layer; loading the tiny model needs well under the 3.5 GiB cap.
    # (Packed, the script would pass the rows one at a time, and the run would fit.)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    long = [json.loads(line) for line in DATA.joinpath("train.jsonl").read_text(encoding="utf-8").splitlines()[:64]]
    for record in long:
        words = (record["messages"][-2]["content"] + " ") * 100
        ids = tokenizer(words, add_special_tokens=False)["input_ids"][:1900]  # with the answer, under 2048 tokens
        record["messages"][-2]["content"] = tokenizer.decode(ids)
    script = build_project(
        tmp_path, tiny_model,
        **{"max_length = 1024\npacking = true": "max_length = 2048\npacking = false",
           'base = "': 'attn_implementation = "eager"\nbase = "',
           "batch_size = 4\nmicro_batch_size = 2": "batch_size = 32\nmicro_batch_size = 32",
           "max_steps = 30": "max_steps = 2", "save_steps = 5": "save_steps = 2"},
        train_records=long,
    )
    lock = json.loads((script.parent / "ftc.lock.json").read_text(encoding="utf-8"))
    output = tmp_path / "run"
    result = train(script, output, limit_bytes=int(3.5 * 2**30))
    assert result.returncode == 3, result.stderr[-3000:]
    message = result.stderr[result.stderr.index("ftc: out of memory"):]
    estimate = lock["estimates"]["peak_memory_gib"]
    assert f"The plan estimated a peak of {estimate:.2f} GiB per device" in message
    assert "training.micro_batch_size = 16 (gradient accumulation doubles to 2; the batch stays the same)" in message
    assert "training.gradient_checkpointing = true" in message
    assert 'method.kind = "qlora"' in message
    assert last_event(output)["status"] == "out_of_memory"
