"""kind = "qlora": LoRA on a base quantized to 4 bits by bitsandbytes, for the smallest memory footprint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from ftc.compiler.methods.base import MethodDef, ResolveContext
from ftc.compiler.methods.lora import (
    LoraFields,
    LoraPlanFields,
    check_lora,
    check_targets,
    lora_arguments,
    lora_trainable_params,
)
from ftc.compiler.plan.base import per_device

UTILIZATION = 0.25  # of the GPU's peak: QLoRA dequantizes the base on every matmul


class Qlora(LoraFields):
    kind: Literal["qlora"] = Field(
        description="LoRA on a 4-bit quantized base (bitsandbytes), for the smallest memory footprint."
    )
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field(
        default="nf4", description="4-bit data type: NF4 (recommended) or FP4."
    )
    bnb_4bit_use_double_quant: bool = Field(
        default=True, description="Quantize the quantization constants too (saves ~0.4 bit per weight)."
    )
    bnb_4bit_compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="dtype of the matmuls on the 4-bit weights. 'auto' is bfloat16 on CUDA, float32 on the CPU.",
    )


class QloraPlan(LoraPlanFields):
    kind: Literal["qlora"]
    bnb_4bit_quant_type: str
    bnb_4bit_use_double_quant: bool
    bnb_4bit_compute_dtype: dict[str, str]  # per device

    quantized_base: ClassVar[bool] = True
    utilization: ClassVar[float | None] = UTILIZATION


def _resolve(method: Qlora, ctx: ResolveContext) -> QloraPlan:
    compute = method.bnb_4bit_compute_dtype
    return QloraPlan(
        kind="qlora",
        adapter="lora",
        **lora_arguments(method),
        bnb_4bit_quant_type=method.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=method.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=per_device(
            ctx.accelerator, compute if compute != "auto" else "float32", compute if compute != "auto" else "bfloat16"
        ),
        trainable_params=lora_trainable_params(method, ctx.info),
        total_params=ctx.info.total_params,
    )


def _checks(loaded: Any) -> Iterator[Any]:
    spec = loaded.spec
    if spec.hardware.strategy == "deepspeed_zero3":
        yield loaded.diag("hardware.strategy", "QLoRA cannot shard 4-bit weights with DeepSpeed ZeRO-3", 'use strategy = "fsdp" or "ddp", or kind = "lora"')
    if spec.hardware.accelerator == "cpu" and spec.method.bnb_4bit_compute_dtype == "float16":
        yield loaded.diag("method.bnb_4bit_compute_dtype", "bitsandbytes' CPU 4-bit kernels do not compute in float16", 'use "float32" or "bfloat16" (or "auto")')
    yield from check_lora(loaded)


QLORA = MethodDef(
    kind="qlora",
    spec=Qlora,
    plan=QloraPlan,
    template="sft.py.j2",
    trains_on="demonstrations",
    words="QLoRA: LoRA on a 4-bit quantized base",
    key_words="a 4-bit quantization setting",
    resolve=_resolve,
    learning_rate=lambda method: 2e-4,
    learning_rate_range=(2e-4, 5e-4),
    cuda_optim="paged_adamw_8bit",
    checks=_checks,
    model_check=check_targets,
    capacity="give LoRA more capacity (method.r, target_modules = \"all-linear\")",
)
