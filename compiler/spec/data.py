"""[data]: where the examples are, their format, and how long sequences and losses are handled."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ftc.compiler.schema import SpecModel, free_text, one_line, path_text

SYSTEM_PROMPT_LIMIT = 65_536  # characters of data.system_prompt


class Data(SpecModel):
    train: str = Field(
        min_length=1,
        description="Training examples: a .jsonl or .json file, relative to the spec.",
    )
    validation: str | None = Field(
        default=None,
        description="Held-out examples in the same format. Leave unset to use `validation_split`.",
    )
    validation_split: float | None = Field(
        default=None,
        gt=0.0,
        lt=0.5,
        description=(
            "Share of the training file held out for validation when `validation` is unset. "
            "The split is deterministic from `project.seed` and recorded in the lock."
        ),
    )
    format: Literal["auto", "chat", "completion", "preference", "unpaired", "openai"] = Field(
        default="auto",
        description=(
            "chat: {\"messages\": [...]}; completion: {\"prompt\", \"completion\"}; preference: "
            "{\"prompt\", \"chosen\", \"rejected\"}; unpaired: {\"prompt\", \"completion\", \"label\"}, the label "
            "true for a desirable completion and false for an undesirable one (KTO). openai: OpenAI's fine-tuning "
            "JSONL, SFT records {\"messages\": [...]} (read as chat) or DPO records {\"input\", \"preferred_output\", "
            "\"non_preferred_output\"} (read as preference), one kind a file; the build trains on its converted copy and "
            "the lock records converted_from = \"openai\". Tool calls, message names and reinforcement data are refused "
            "at their line. 'auto' detects the format from the first record (OpenAI SFT records are chat records, and "
            "detect as chat; OpenAI DPO records detect as openai) and the lock records what was found."
        ),
    )
    max_length: int = Field(
        default=2048,
        ge=16,
        le=1_048_576,
        description="Longest tokenized example (prompt + answer, chat template included).",
    )
    overlong: Literal["error", "drop", "truncate"] = Field(
        default="error",
        description=(
            "What to do with an example longer than `max_length`: refuse to build, drop it, or "
            "truncate it. Dropped and truncated examples are counted and listed."
        ),
    )
    train_on: Literal["completions", "all"] = Field(
        default="completions",
        description=(
            "'completions': only assistant turns (or the completion) carry loss, each with its "
            "end-of-turn token; 'all': every token does."
        ),
    )
    packing: bool | None = Field(
        default=None,
        description=(
            "Pack several examples into one sequence of up to `max_length` tokens (no padding). "
            "Unset means on for supervised methods and off for DPO."
        ),
    )
    convert_to: Literal["chat"] | None = Field(
        default=None,
        description=(
            "'chat' turns completion data (string prompt and completion) into conversations: a user turn with the "
            "prompt and an assistant turn with the completion, after `system_prompt` when it is set. Lossless; the "
            "converted files are written into the build and trained with the chat template."
        ),
    )
    system_prompt: str | None = Field(
        default=None,
        max_length=SYSTEM_PROMPT_LIMIT,
        description=(
            "System turn to put first when `convert_to = \"chat\"` converts completion data, up to "
            f"{SYSTEM_PROMPT_LIMIT} characters. Unset adds none."
        ),
    )
    label_field: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description=(
            "The field that holds each example's label, for the label balance in `ftc data check` and its "
            "imbalance warning: a field of the record (then allowed next to the format's own), or a key of the "
            "assistant's answer when that answer is a JSON object (e.g. 'category'). Unset, answers that form a "
            "small set are taken as labels."
        ),
    )
    dedup: Literal["none", "exact", "normalized"] = Field(
        default="none",
        description=(
            "Remove repeated examples within each data file, keeping the first: 'exact' compares the records as "
            "they are, 'normalized' after case folding and collapsing whitespace. Every removal is listed, with "
            "its line and the line it repeats, in the build's data/cleaning-report.jsonl."
        ),
    )
    drop_empty_turns: bool = Field(
        default=False,
        description="Remove chat turns whose content is empty or whitespace (listed in the cleaning report).",
    )
    normalize_unicode: Literal["none", "NFC", "NFKC"] = Field(
        default="none",
        description="Unicode-normalise every string of every example (NFC composes; NFKC also folds compatibility forms).",
    )
    strip_whitespace: bool = Field(
        default=False,
        description="Strip leading and trailing whitespace from every string of every example.",
    )

    _check_paths = field_validator("train", "validation")(path_text)
    _check_label_field = field_validator("label_field")(one_line)
    _check_system_prompt = field_validator("system_prompt")(free_text)
