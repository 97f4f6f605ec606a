"""The records' shared base, and eval.json's record (`EvalRecord`), which `ftc eval` writes and the report reads.

runtime/runfolder.py holds run.json's record and re-exports these, so that every record is read from one place.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class RecordModel(BaseModel):
    """The base of every record: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON, with the keys it was given only (a default is not written)."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


R = TypeVar("R", bound=RecordModel)


def updated(record: R, *, drop: tuple[str, ...] = (), **fields: Any) -> R:
    """A copy of `record` with `fields` replaced and the keys in `drop` left out, validated again."""
    kept = {key: value for key, value in record.to_json().items() if key not in drop}
    return type(record).model_validate({**kept, **fields})


class HeldOutSource(RecordModel):
    source: str | None = None  # "validation", "split" or "train"
    path: str | None = None
    max_examples: int | None = None


class EvalModels(RecordModel):
    base: str | None = None  # None: not evaluated (compare_base = false)
    few_shot: str | None = None  # the few-shot baseline (evaluation.baselines), when asked for
    tuned: str | None = None


class Decoding(RecordModel):
    do_sample: bool | None = None
    max_new_tokens: int | None = None
    stop_token_ids: tuple[int, ...] | None = None
    stop_strings: tuple[str, ...] | None = None
    chat_template_sha256: str | None = None
    batch_size: int | None = None
    padding_side: str | None = None


class GateResult(RecordModel):
    gate: str
    holds: bool
    left: float | None = None
    right: float | None = None
    error: str | None = None  # the gate could not be checked, and why


class Finding(RecordModel):
    finding: str
    evidence: str = ""
    remedy: str = ""


class NotChecked(RecordModel):
    finding: str
    reason: str = ""


class EvalAnswer(RecordModel):
    source: str | None = None
    prompt: str | None = None
    reference: str | None = None
    base: str | None = None  # None: not generated
    tuned: str | None = None
    base_tokens: int | None = None
    tuned_tokens: int | None = None
    few_shot: str | None = None  # the few-shot baseline's answer, when asked for
    few_shot_tokens: int | None = None


class EvalRecord(RecordModel):
    """eval.json (and eval-endpoint.json); its shape is documented in README.md ("Evaluating a run").
    Metric rows, lm-eval results and the endpoint's facts stay mappings: their keys are the metrics' and
    the tasks' own."""

    format_version: int
    run: str | None = None
    plan_hash: str | None = None
    examples: int | None = None
    held_out: HeldOutSource = Field(default_factory=HeldOutSource)
    models: EvalModels = Field(default_factory=EvalModels)
    endpoint: dict[str, Any] | None = None
    decoding: Decoding = Field(default_factory=Decoding)
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)
    json_schema: dict[str, Any] | None = None
    label_field: str | None = None
    versions: dict[str, str | None] = Field(default_factory=dict)
    lm_eval: dict[str, dict[str, Any]] = Field(default_factory=dict)
    baselines: dict[str, Any] | None = None  # the prompting baselines and the verdict on them, when asked for
    gates: tuple[GateResult, ...] = ()
    notes: tuple[str, ...] = ()
    diagnosis: tuple[Finding, ...] = ()
    not_checked: tuple[NotChecked, ...] = ()
    answers: tuple[EvalAnswer, ...] = ()
    seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def gates_hold(self) -> bool:
        return all(g.holds for g in self.gates)


class AgainstSide(RecordModel):
    """against.json "champion": the run the challenger was scored against."""

    run: str | None = None
    project: str | None = None
    path: str | None = None  # the champion's run folder, as given (or relative to the working folder)
    plan_hash: str | None = None


class AgainstAnswer(RecordModel):
    source: str | None = None
    prompt: str | None = None
    reference: str | None = None
    champion: str | None = None
    challenger: str | None = None
    champion_tokens: int | None = None
    challenger_tokens: int | None = None


class AgainstVerdict(RecordModel):
    passed: bool
    headline: str | None = None
    max_regression: float | None = None
    min_headline_gain: float | None = None
    failures: tuple[str, ...] = ()  # why it failed, one line each


class AgainstRecord(RecordModel):
    """against.json: `ftc eval RUN --against CHAMPION` (runtime/evaluate/against.py). Both runs answer the
    challenger's held-out prompts with the same decoding; metric rows are {"champion", "challenger", "delta",
    "better" ("higher", "lower" or None: not gated), "regressed", "note"}."""

    format_version: int
    run: str | None = None  # the challenger
    plan_hash: str | None = None
    champion: AgainstSide = Field(default_factory=AgainstSide)
    examples: int | None = None
    held_out: HeldOutSource = Field(default_factory=HeldOutSource)
    held_out_data: dict[str, Any] = Field(default_factory=dict)  # each side's held-out data identity, and what differs
    leak_check: dict[str, Any] = Field(default_factory=dict)  # the champion's training examples against these prompts
    decoding: Decoding = Field(default_factory=Decoding)
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)
    verdict: AgainstVerdict
    warnings: tuple[str, ...] = ()
    versions: dict[str, str | None] = Field(default_factory=dict)
    answers: tuple[AgainstAnswer, ...] = ()
    seconds: dict[str, float] = Field(default_factory=dict)


class Promotion(RecordModel):
    """One entry of promoted.json's history: a run made current (`ftc promote RUN`) or a rollback."""

    action: str  # "promote" or "rollback"
    run: str  # the run id (its folder under runs/<name>/)
    plan_hash: str | None = None
    when: str  # UTC, ISO 8601
    user: str | None = None
    reason: str | None = None
    forced: bool = False
    previous: str | None = None  # the run that was current before
    evidence: dict[str, Any] = Field(default_factory=dict)  # eval gates, merge, against, what --force overrode


class PromotedRecord(RecordModel):
    """runs/<name>/promoted.json: the run `ftc serve NAME` serves, and how it came to be (runtime/promote.py)."""

    format_version: int
    project: str
    current: str | None = None  # the run id; None when every promotion was rolled back
    history: tuple[Promotion, ...] = ()
