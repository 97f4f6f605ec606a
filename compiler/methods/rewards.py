"""`[[method.rewards]]`: what GRPO and RLOO optimise, declared as data and never as code.

Each entry is one reward with a `weight`; trl sums the weighted rewards of every completion (reward_weights).
The generated script builds the functions from the plan's entries with templates/rewards.py, so a spec names a
kind and its settings, and no Python. The kinds cover what OpenAI's graders `string_check` (exact_match,
label_match, regex) and `text_similarity` (similarity) do, plus JSON checks, a length target and a trained reward
model (a `kind = "reward"` run's final/, or any sequence-classification model folder with one label).

"The reference" is the example's reference answer (the last assistant turn of chat data, the completion of
prompt-completion data) unless `field` names another field of the record, which the data must then hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator

from ftc.compiler.schema import SpecModel, one_line, path_text

WEIGHT = Field(default=1.0, ge=0.0, le=100.0, description="How much this reward counts in the weighted sum.")
FIELD = Field(
    default=None,
    min_length=1,
    description="The example's field that holds the reference; unset: the example's reference answer.",
)
_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9_]+")


class _Reward(SpecModel):
    weight: float = WEIGHT


class JsonValidReward(_Reward):
    kind: Literal["json_valid"] = Field(description="1 when the answer parses as JSON, else 0.")


class JsonSchemaReward(_Reward):
    kind: Literal["json_schema"] = Field(description="1 when the answer parses as JSON and validates, else 0.")
    schema_file: str = Field(alias="schema", description="JSON Schema file, relative to the spec (hashed in the lock).")

    _check_schema = field_validator("schema_file")(path_text)


class ExactMatchReward(_Reward):
    kind: Literal["exact_match"] = Field(description="1 when the answer equals the reference (whitespace stripped).")
    field: str | None = FIELD
    key: str | None = Field(default=None, min_length=1, description="Compare this key of the JSON answer instead of the whole answer.")

    _check_text = field_validator("field", "key")(one_line)


class LabelMatchReward(_Reward):
    kind: Literal["label_match"] = Field(
        description="1 when this key of the JSON answer equals the label: the same key of a JSON reference, or the reference itself."
    )
    key: str = Field(min_length=1, description="The key of the JSON answer that holds the label, e.g. 'category'.")
    field: str | None = FIELD

    _check_text = field_validator("field", "key")(one_line)


class RegexReward(_Reward):
    kind: Literal["regex"] = Field(description="1 when the pattern is found in the answer (or, with match = false, is not).")
    pattern: str = Field(min_length=1, max_length=1000, description="A Python regular expression, searched for in the answer.")
    match: bool = Field(default=True, description="true: reward answers that contain the pattern; false: those that do not.")


class LengthReward(_Reward):
    kind: Literal["length"] = Field(description="0 at the target length, less the further the answer is from it.")
    target: int = Field(ge=1, le=1_000_000, description="The answer length to aim for, in tokens of the model's tokenizer.")
    penalty: float = Field(default=1.0, gt=0.0, le=100.0, description="Reward = -penalty x |tokens - target| / target.")


class SimilarityReward(_Reward):
    kind: Literal["similarity"] = Field(description="How close the answer is to the reference, from 0 to 1.")
    metric: Literal["rouge_l", "chrf"] = Field(default="rouge_l", description="ROUGE-L F-measure, or sentence chrF / 100.")
    field: str | None = FIELD

    _check_text = field_validator("field")(one_line)


class RewardModelReward(_Reward):
    kind: Literal["reward_model"] = Field(description="The score of a trained reward model (a sequence classifier with one label).")
    path: str = Field(
        min_length=1,
        description="The reward model's folder, relative to the spec: a `kind = \"reward\"` run's final/ (hashed in the lock).",
    )

    _check_path = field_validator("path")(path_text)


REWARD_KINDS = (
    JsonValidReward, JsonSchemaReward, ExactMatchReward, LabelMatchReward, RegexReward, LengthReward, SimilarityReward, RewardModelReward,
)  # fmt: skip
Reward = Annotated[Union[REWARD_KINDS], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007


def reward_names(rewards: list[Any]) -> list[str]:
    """The name each reward logs under (rewards/<name>/mean in trl's logs): its kind and what it reads, unique."""
    names: list[str] = []
    for reward in rewards:
        parts = [reward.kind]
        if reward.kind == "similarity":
            parts = [reward.metric]
        if getattr(reward, "key", None):
            parts.append(reward.key)
        if getattr(reward, "field", None):
            parts.append(reward.field)
        name = _NAME_CHARACTER.sub("_", "_".join(parts)).strip("_")[:60] or reward.kind
        shown, n = name, 2
        while shown in names:
            shown, n = f"{name}_{n}", n + 1
        names.append(shown)
    return names


def reward_plan(reward: Any, name: str, loaded_schema: Any = None) -> dict[str, Any]:
    """The plan's entry for one reward: what templates/rewards.py reads. A schema enters whole (the script holds it
    as data); a reward model by its name in inputs.reward_models."""
    entry: dict[str, Any] = {"name": name, **reward.model_dump(by_alias=False)}
    if reward.kind == "json_schema":
        entry["schema"] = loaded_schema
    return dict(sorted(entry.items()))


def fields_read(rewards: list[Any]) -> list[str]:
    """The record fields the rewards read besides the reference answer, in order, each once."""
    return list(dict.fromkeys(r.field for r in rewards if getattr(r, "field", None)))


def check_rewards(loaded: Any) -> Iterator[Any]:
    """What the spec alone can tell about the rewards: a weight somewhere, files that exist and parse, patterns
    that compile, and fields the training data holds."""
    from ftc.compiler.spec.checks import file_problem

    rewards = loaded.spec.method.rewards
    if rewards and not any(r.weight for r in rewards):
        yield loaded.diag("method.rewards.0.weight", "every reward has weight 0: the policy would be trained on a reward of 0", "give at least one reward a weight above 0")
    for i, reward in enumerate(rewards):
        key = f"method.rewards.{i}"
        if reward.kind == "regex":
            try:
                re.compile(reward.pattern)
            except re.error as exc:
                yield loaded.diag(f"{key}.pattern", f"the pattern is not a regular expression: {exc}", "write a Python regular expression (re module)")
        elif reward.kind == "json_schema":
            problem = file_problem(loaded.base_dir, reward.schema_file, "JSON Schema file")
            if problem is not None:
                yield loaded.diag(f"{key}.schema", *problem)
            else:
                _, why = read_schema(loaded.resolve(reward.schema_file))
                if why is not None:
                    yield loaded.diag(f"{key}.schema", why, "give a JSON Schema (a JSON object) that jsonschema accepts")
        elif reward.kind == "reward_model":
            yield from _check_reward_model(loaded, f"{key}.path", reward.path)
    yield from _check_fields(loaded, rewards)


def read_schema(path: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(schema, None), or (None, why it cannot be used)."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path.name} is not readable JSON: {exc}"
    if not isinstance(schema, dict):
        return None, f"{path.name} holds a JSON {type(schema).__name__}, and a JSON Schema is an object"
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        return None, f"{path.name} is not a valid JSON Schema: {exc.message}"
    return schema, None


def _check_reward_model(loaded: Any, key: str, path: str) -> Iterator[Any]:
    """A reward model is a local folder with a config.json whose model is a sequence classifier with one label."""
    folder = loaded.resolve(path)
    if not folder.is_dir():
        yield loaded.diag(key, f"reward model not found: {path}", "give the folder of a `kind = \"reward\"` run's final/ (runs/<project>/<run>/final), relative to the spec")
        return
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        yield loaded.diag(key, f"{path} has no readable config.json: it is not a model folder", "give the final/ folder of a `kind = \"reward\"` run")
        return
    architectures = config.get("architectures") or [] if isinstance(config, dict) else []
    labels = config.get("num_labels", len(config.get("id2label") or {}) or None) if isinstance(config, dict) else None
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures) or labels not in (None, 1):
        yield loaded.diag(key, f"{path} is not a reward model: its config names {architectures or 'no architecture'}" + (f" with {labels} labels" if labels not in (None, 1) else ""), "train one with kind = \"reward\" and give its run's final/ folder")


def _check_fields(loaded: Any, rewards: list[Any]) -> Iterator[Any]:
    """Every field a reward reads is in every training record: the first record without it is named."""
    wanted = {r.field: i for i, r in reversed(list(enumerate(rewards))) if getattr(r, "field", None)}
    if not wanted:
        return
    from ftc.compiler.data.read import Record, iter_records

    train = loaded.spec.data.train
    try:
        missing: dict[str, int] = {}
        for item in iter_records(loaded.resolve(train)):
            if isinstance(item, Record) and isinstance(item.value, dict):
                for name in wanted:
                    if name not in item.value and name not in missing:
                        missing[name] = item.line
    except (OSError, RuntimeError, ValueError):  # an unreadable file is data.train's diagnostic
        return
    for name, line in missing.items():
        yield loaded.diag(
            f"method.rewards.{wanted[name]}.field",
            f"the reward reads the field {name!r}, and {train} line {line} has none",
            f"give every record a {name!r} field, or remove field to compare with the example's reference answer",
        )
