"""[method]: how the weights are trained. A discriminated union on `kind`."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from ftc.compiler.spec.base import SpecModel

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoraFields(SpecModel):
    """peft LoraConfig arguments, named as peft names them."""

    r: int = Field(default=16, ge=1, le=1024, description="LoRA rank. 8-64 is usual; 16 is a good start.")
    lora_alpha: int = Field(
        default=32, ge=1, description="LoRA scaling numerator (scale = lora_alpha / r). Often 2 x r."
    )
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default=list(DEFAULT_TARGETS),
        min_length=1,
        description=(
            "Module names to adapt, e.g. q_proj, k_proj, v_proj, o_proj (add gate_proj, up_proj, "
            "down_proj for the MLP), or 'all-linear'."
        ),
    )
    bias: Literal["none", "all", "lora_only"] = Field(default="none", description="Which biases to train.")
    use_rslora: bool = Field(default=False, description="Rank-stabilised scaling (lora_alpha / sqrt(r)).")
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Extra modules trained in full and saved with the adapter, e.g. lm_head.",
    )


class Full(SpecModel):
    kind: Literal["full"] = Field(description="Update every weight of the model.")


class Lora(LoraFields):
    kind: Literal["lora"] = Field(description="Train low-rank adapters on a frozen base (peft).")


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


class Dpo(LoraFields):
    kind: Literal["dpo"] = Field(description="Direct Preference Optimization on chosen/rejected pairs (trl).")
    adapter: Literal["lora", "none"] = Field(
        default="lora",
        description="'lora' trains a LoRA adapter (the LoRA keys apply); 'none' updates every weight.",
    )
    beta: float = Field(
        default=0.1, gt=0.0, le=10.0, description="Strength of the pull towards the reference model."
    )
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = Field(
        default="sigmoid", description="DPO loss variant, as trl names it."
    )
    reference: str = Field(
        default="base",
        min_length=1,
        description=(
            "The reference model: 'base' (the base model; with a LoRA adapter trl disables the adapter "
            "instead of loading a copy) or the path of another model."
        ),
    )


Method = Annotated[Union[Full, Lora, Qlora, Dpo], Field(discriminator="kind")]
METHOD_KINDS = ("full", "lora", "qlora", "dpo")
