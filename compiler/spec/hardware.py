"""[hardware]: where the run executes. Compile checks that the plan fits the GPU described here
(compiler/plan/hardware.py); the machine itself is checked just before running."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ftc.compiler.plan.gpus import GPUS
from ftc.compiler.schema import SpecModel

GPU_TYPES = tuple(GPUS)


class Hardware(SpecModel):
    accelerator: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="'auto' uses CUDA when the machine has it and the CPU otherwise."
    )
    gpus: int = Field(default=1, ge=1, le=64, description="Devices (processes) per node.")
    nodes: int = Field(default=1, ge=1, le=1024, description="Machines taking part in the run.")
    gpu_type: Literal[GPU_TYPES] | None = Field(  # type: ignore[valid-type]
        default=None,
        description=(
            "GPU model, for the memory verdict and the time estimate: compile refuses a plan whose estimated "
            "peak exceeds its memory. Or give `gpu_memory_gb` (and `gpu_tflops`)."
        ),
    )
    gpu_memory_gb: float | None = Field(
        default=None,
        gt=0,
        le=4096,
        description="Memory per GPU in GB (as nvidia-smi reports it, MiB / 1024), when the type is not listed.",
    )
    gpu_tflops: float | None = Field(
        default=None,
        gt=0,
        le=100000,
        description="Dense bf16 peak TFLOPS per GPU, for the time estimate, when the type is not listed.",
    )
    strategy: Literal["auto", "none", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"] = Field(
        default="auto",
        description="Distributed strategy. 'auto' is none on one device and ddp on several.",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Training precision. 'auto' is bf16 on CUDA and fp32 on the CPU."
    )
