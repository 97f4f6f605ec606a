"""[hardware]: where the run executes. Checked against the machine just before running, not at compile."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import SpecModel

GPU_TYPES = ("L4", "RTX4090", "A10G", "A100-40GB", "A100-80GB", "H100", "H200")


class Hardware(SpecModel):
    accelerator: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="'auto' uses CUDA when the machine has it and the CPU otherwise."
    )
    gpus: int = Field(default=1, ge=1, le=64, description="Devices (processes) per node.")
    nodes: int = Field(default=1, ge=1, le=1024, description="Machines taking part in the run.")
    gpu_type: Literal[GPU_TYPES] | None = Field(  # type: ignore[valid-type]
        default=None, description="GPU model, for memory and time estimates. Or give `gpu_memory_gb`."
    )
    gpu_memory_gb: float | None = Field(
        default=None, gt=0, le=4096, description="Memory per GPU in GB, when the type is not listed."
    )
    strategy: Literal["auto", "none", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"] = Field(
        default="auto",
        description="Distributed strategy. 'auto' is none on one device and ddp on several.",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Training precision. 'auto' is bf16 on CUDA and fp32 on the CPU."
    )
