"""[evaluation]: how base and tuned models are compared, and which results gate a release."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

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
BASELINES = ("zero_shot", "few_shot")


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
    baselines: list[Literal[BASELINES]] = Field(  # type: ignore[valid-type]
        default_factory=list,
        description=(
            "Prompting baselines scored beside the tuned model: zero_shot (the base model prompted as the tuned one "
            "is) and few_shot (the base model with few_shot_k training examples as earlier turns). `ftc eval` says "
            "when one comes within baseline_margin of the tuned model on the headline metric."
        ),
    )
    few_shot_k: int = Field(
        default=5, ge=1, le=64, description="Training examples in each few_shot prompt, chosen by project.seed."
    )
    baseline_margin: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description=(
            "How close (absolute) a baseline may come to the tuned model on the headline metric (evaluation.headline: "
            "by default the first of metrics other than mean_length) before `ftc eval` says fine-tuning is not paying "
            "for itself."
        ),
    )
    headline: str | None = Field(
        default=None,
        max_length=100,
        description=(
            "The metric that says which model is better (`ftc eval RUN --against CHAMPION` requires it to rise): one "
            "of metrics (or distinct_1, repetition with distinct_n), not mean_length. Default: the first of metrics "
            "other than mean_length."
        ),
    )
    max_regression: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description=(
            "`ftc eval RUN --against CHAMPION`: how far (absolute) any metric may get worse than the champion's "
            "before the challenger fails (repetition counts a rise as worse; mean_length is not gated)."
        ),
    )
    min_headline_gain: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description=(
            "`ftc eval RUN --against CHAMPION`: how much (absolute) the headline metric must rise over the "
            "champion's; it must rise in any case (0: any rise)."
        ),
    )
    gates: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list,
        description=(
            "Conditions the tuned model must meet, e.g. 'tuned.exact_match >= base.exact_match + 0.2' "
            "or 'tuned.json_valid >= 0.95'; zero_shot.<metric> and few_shot.<metric> read the baselines. "
            "`ftc eval` exits 1 when one fails."
        ),
    )

    _check_json_schema = field_validator("json_schema")(path_text)

    @field_validator("headline")
    @classmethod
    def _headline_is_measured(cls, value: str | None, info: ValidationInfo) -> str | None:
        metrics = info.data.get("metrics") or []
        measured = set(metrics) | ({"distinct_1", "repetition"} if "distinct_n" in metrics else set())
        if value is not None and value not in measured - {"mean_length"}:
            raise ValueError(
                "is not an evaluated metric with a better direction: name one of metrics other than mean_length "
                "(or distinct_1, repetition with distinct_n)"
            )
        return value

    def headline_metric(self) -> str | None:
        """`headline`, else the first of metrics that has a better direction (not mean_length)."""
        return self.headline or next((name for name in self.metrics if name != "mean_length"), None)

