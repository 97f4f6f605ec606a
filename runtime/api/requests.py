"""What a client may send to create a fine-tuning job, in OpenAI's shape (openai-python's JobCreateParams), checked
field by field: an unknown or misspelled field is refused with its name (OpenAI would ignore it without a word).

The method's hyperparameters sit under method.<type>.hyperparameters; the deprecated top-level `hyperparameters`
(old code still sends it) means the same for a supervised job, and may not disagree with the method's. Each is a
number or "auto": "auto" keeps what the model's spec (the server's settings) says, and the values the planner
resolves are returned in the job object.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_UNION_BRANCH = re.compile(r"^(int|float|str|bool|none|constrained-\w+|literal\[.*\]|function-\w+\[.*\])$")  # pydantic's names for a union's members
SUFFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
Auto = Literal["auto"]
TUNED = ("n_epochs", "batch_size", "learning_rate_multiplier", "beta")  # the hyperparameters a job may set


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hyperparameters(_Strict):
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto | None = None
    batch_size: Annotated[int, Field(ge=1, le=4096)] | Auto | None = None
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Auto | None = None


class DpoHyperparameters(Hyperparameters):
    beta: Annotated[float, Field(gt=0, le=10)] | Auto | None = None


class _Supervised(_Strict):
    hyperparameters: Hyperparameters | None = None


class _Dpo(_Strict):
    hyperparameters: DpoHyperparameters | None = None


class ReinforcementHyperparameters(Hyperparameters):
    # OpenAI's knobs of its own RL service, which ftc's GRPO has no counterpart for: refused unless "auto"
    compute_multiplier: Any = None
    eval_interval: Any = None
    eval_samples: Any = None
    reasoning_effort: Any = None


class _Reinforcement(_Strict):
    grader: Any  # mapped onto ftc rewards, or refused with the reason, by graders.py
    hyperparameters: ReinforcementHyperparameters | None = None


class Method(_Strict):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: _Supervised | None = None
    dpo: _Dpo | None = None
    reinforcement: _Reinforcement | None = None


class JobRequest(_Strict):
    model: str = Field(min_length=1, max_length=200)
    training_file: str = Field(min_length=1, max_length=200)
    validation_file: str | None = Field(default=None, max_length=200)
    hyperparameters: Hyperparameters | None = None  # deprecated by OpenAI; old code sends it
    method: Method | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None

    @property
    def method_type(self) -> str:
        return self.method.type if self.method else "supervised"

    def settings(self) -> dict[str, Any]:
        """The method's hyperparameters as given, "auto" and unset left out."""
        inner = getattr(self.method, self.method_type, None) if self.method else None
        given = inner.hyperparameters if inner is not None and getattr(inner, "hyperparameters", None) else None
        chosen = {k: v for k, v in (given.model_dump() if given else {}).items() if v not in (None, "auto") and k in TUNED}
        old = {k: v for k, v in (self.hyperparameters.model_dump() if self.hyperparameters else {}).items() if v not in (None, "auto")}
        for key, value in old.items():
            if key in chosen and chosen[key] != value:
                raise RequestProblem(f"hyperparameters.{key} ({value}) disagrees with method.{self.method_type}.hyperparameters.{key} ({chosen[key]})", f"hyperparameters.{key}")
            chosen.setdefault(key, value)
        return chosen


class RequestProblem(Exception):
    """A request that cannot become a job: HTTP 400 with the field it names."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def parse_job_request(body: Any) -> JobRequest:
    if not isinstance(body, dict):
        raise RequestProblem("the request body must be a JSON object")
    try:
        request = JobRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not _UNION_BRANCH.match(str(p)))
        text = "unknown parameter" if first["type"] == "extra_forbidden" else first["msg"]
        raise RequestProblem(f"{where}: {text}", where or None) from None
    if request.suffix is not None and not SUFFIX.match(request.suffix):
        raise RequestProblem("suffix: up to 64 letters, digits, '.', '_' or '-'", "suffix")
    if request.integrations:
        raise RequestProblem("integrations (Weights & Biases) are not supported by ftc api: ftc records every run in its run folder and report", "integrations")
    if request.metadata is not None and (len(request.metadata) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in request.metadata.items())):
        raise RequestProblem("metadata: at most 16 pairs, keys up to 64 characters, values up to 512", "metadata")
    if request.method is not None:
        kind = request.method.type
        for other in ("supervised", "dpo", "reinforcement"):
            if other != kind and getattr(request.method, other) is not None:
                raise RequestProblem(f"method.{other} is set but method.type is {kind}", f"method.{other}")
    if request.hyperparameters is not None and request.method_type != "supervised":
        raise RequestProblem("the top-level hyperparameters field applies to supervised jobs only; use method.<type>.hyperparameters", "hyperparameters")
    request.settings()  # disagreements between the two places
    inner = request.method.reinforcement if request.method is not None else None
    if inner is not None and inner.hyperparameters is not None:
        for key in ("compute_multiplier", "eval_interval", "eval_samples", "reasoning_effort"):
            if getattr(inner.hyperparameters, key) not in (None, "auto", "default"):
                raise RequestProblem(
                    f"method.reinforcement.hyperparameters.{key}: ftc's GRPO has no such setting (the group size, "
                    "sampling and evaluation are in the server's reinforcement spec); leave it \"auto\"",
                    f"method.reinforcement.hyperparameters.{key}",
                )
    return request
