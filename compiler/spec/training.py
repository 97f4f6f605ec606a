"""[training]: the optimisation loop. Names follow transformers' TrainingArguments where users know them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from ftc.compiler.schema import SpecModel, one_line

# Beyond these, a count cannot be what was meant (a step count of 2**63-1 would run for ever); each is stated in
# the field's range, which every diagnostic's hint shows.
MAX_STEPS = 10_000_000
MAX_BATCH = 65_536

OPTIMIZERS = (
    "auto",
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_bnb_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "adafactor",
    "sgd",
)


class Training(SpecModel):
    epochs: int | float = Field(default=3, gt=0, le=1000, description="Passes over the training data.")
    max_steps: int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Stop after this many optimizer steps; overrides `epochs`."
    )
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description=(
            "Peak learning rate. Unset picks the method's usual value: full 2e-5, LoRA 2e-4, QLoRA 2e-4, "
            "DPO 5e-6 (full) or 5e-5 (LoRA)."
        ),
    )
    batch_size: int = Field(
        default=16,
        ge=1,
        le=MAX_BATCH,
        description=(
            "Effective batch size: micro_batch_size x gradient accumulation x devices. Must divide exactly."
        ),
    )
    micro_batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] | Literal["auto"] = Field(
        default=4,
        description=(
            "Examples (or packed sequences) per device per forward pass. 'auto' picks the largest that fits "
            "the GPU's memory (hardware.gpu_type or gpu_memory_gb) and divides batch_size per device."
        ),
    )
    gradient_accumulation_steps: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BATCH,
        description="Derived from batch_size when unset; when set, it must agree with batch_size.",
    )
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr"] = Field(
        default="cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(
        default=0.03, ge=0.0, lt=1.0, description="Share of the steps spent warming the learning rate up."
    )
    warmup_steps: int | None = Field(
        default=None, ge=0, le=MAX_STEPS, description="Warmup in steps; overrides `warmup_ratio` when set."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, lt=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(
        default=1.0, ge=0.0, le=1e6, description="Clip the gradient norm to this value; 0 disables clipping."
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in the backward pass: less memory, ~30% slower."
    )
    optim: Literal[OPTIMIZERS] = Field(  # type: ignore[valid-type]
        default="auto",
        description=(
            "Optimizer, as transformers names it. 'auto' is adamw_torch, and paged_adamw_8bit for QLoRA "
            "on CUDA."
        ),
    )
    logging_steps: int = Field(default=10, ge=1, le=MAX_STEPS, description="Log loss and learning rate every N steps.")
    eval_steps: int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Evaluate on the validation set every N steps; unset means once per epoch."
    )
    save_steps: int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Write a checkpoint every N steps; unset means at every evaluation."
    )
    save_total_limit: int = Field(default=2, ge=1, le=1000, description="Checkpoints kept on disk (the best is always kept).")
    early_stopping_patience: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Stop after this many evaluations without a better validation loss. Needs validation data.",
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Experiment trackers. TensorBoard logs go to runs/<name>/<run-id>/logs.",
    )
    wandb_project: str | None = Field(
        default=None, max_length=128, description="Weights & Biases project (up to 128 characters), when 'wandb' is on."
    )

    _check_wandb_project = field_validator("wandb_project")(one_line)
