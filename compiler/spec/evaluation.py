"""[evaluation]: how base and tuned models are compared, and which results gate a release."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from ftc.compiler.schema import SpecModel, one_line, path_text

METRICS = (
    "exact_match",
    "accuracy",
    "rouge_l",
    "bleu",
    "chrf",
    "json_valid",
    "json_schema",
    "distinct_n",
    "mean_length",
)


class Evaluation(SpecModel):
    metrics: list[Literal[METRICS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["exact_match"],
        description="Metrics computed on the held-out split for the base and the tuned model.",
    )
    json_schema: str | None = Field(
        default=None, description="JSON Schema file (relative to the spec) for the json_schema metric."
    )
    lm_eval_tasks: list[Annotated[str, Field(max_length=200), AfterValidator(one_line)]] = Field(
        default_factory=list,
        description="Standard lm-eval tasks run on both models to catch forgetting, when their data is available.",
    )
    compare_base: bool = Field(default=True, description="Also evaluate the base model, side by side.")
    max_new_tokens: int = Field(default=256, ge=1, le=32768, description="Greedy decoding budget per answer.")
    max_examples: int | None = Field(default=None, ge=1, le=100_000_000, description="Evaluate at most this many held-out examples.")
    gates: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list,
        description=(
            "Conditions the tuned model must meet, e.g. 'tuned.exact_match >= base.exact_match + 0.2' "
            "or 'tuned.json_valid >= 0.95'. `ftc eval` exits 1 when one fails."
        ),
    )

    _check_json_schema = field_validator("json_schema")(path_text)
