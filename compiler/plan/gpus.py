"""The GPUs ftc knows by name: memory per card and dense 16-bit tensor-core peak, for the hardware planner.

Memory is the total the driver reports (nvidia-smi's MiB / 1024, in GiB), which for the 24 GB cards is a
little below the marketed figure. Peaks are NVIDIA's datasheet numbers for dense bf16 (no 2:4 sparsity)
with fp32 accumulation, which is what PyTorch's matmuls use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    bf16_tflops: float
    source: str  # where the peak comes from


GPUS: dict[str, Gpu] = {
    gpu.name: gpu
    for gpu in (
        Gpu("L4", 22.49, 121.0, "L4 datasheet: 242 bf16 TFLOPS with sparsity, 121 dense"),
        Gpu("RTX4090", 23.99, 165.2, "Ada whitepaper: 165.2 dense bf16 with fp32 accumulate (330 with fp16 accumulate)"),
        Gpu("A10G", 22.49, 125.0, "the A10 datasheet's 125 dense bf16; AWS's A10G clocks lower, so this is optimistic"),
        Gpu("A100-40GB", 40.0, 312.0, "A100 datasheet: 312 dense bf16"),
        Gpu("A100-80GB", 80.0, 312.0, "A100 datasheet: 312 dense bf16"),
        Gpu("H100", 79.65, 989.0, "H100 SXM datasheet: 989 dense bf16 (the PCIe card: 756)"),
        Gpu("H200", 140.4, 989.0, "H200 datasheet: 989 dense bf16, as the H100 SXM"),
    )
}
