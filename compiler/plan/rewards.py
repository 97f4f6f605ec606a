"""The rewards of a grpo or rloo spec as the build locks them: each `[[method.rewards]]` table becomes a plan
entry (compiler/methods/rewards.py reward_plan), a reward model's folder is found, checked and hashed like a base
model (inputs.reward_models), and a JSON Schema file is read into its entry and hashed (inputs.reward_files), so
that a reward model or schema that changes after `ftc compile` makes the build stale."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.hashing import FileHasher
from ftc.compiler.methods.rewards import read_schema, reward_names, reward_plan
from ftc.compiler.plan.inputs import InputError, ModelSource, relative_to_root, resolve_model
from ftc.compiler.plan.modelinfo import inspect_model


@dataclass(frozen=True)
class Rewards:
    entries: tuple[dict[str, Any], ...] = ()
    models: dict[str, ModelSource] = field(default_factory=dict)  # reward name -> its model
    files: dict[str, str] = field(default_factory=dict)  # root-relative schema path -> sha256


def resolve_rewards(loaded: Any, root: Path, hasher: FileHasher) -> Rewards:
    """Raises InputError (its key under method.rewards) when a reward's model or file cannot be used."""
    rewards = getattr(loaded.spec.method, "rewards", None)
    if not rewards:
        return Rewards()
    entries, models, files = [], {}, {}
    for i, (reward, name) in enumerate(zip(rewards, reward_names(rewards), strict=True)):
        entry = reward_plan(reward, name)
        if reward.kind == "json_schema":
            path = loaded.resolve(reward.schema_file)
            schema, why = read_schema(path)
            if schema is None:
                raise InputError(f"method.rewards.{i}.schema", why or "unreadable", "give a JSON Schema file")
            shown = relative_to_root(path, root)
            files[shown] = hasher.sha256(path)
            entry = reward_plan(reward, name, schema) | {"schema_file": shown}
        elif reward.kind == "reward_model":
            source = reward_model_source(loaded, reward.path, root, hasher, f"method.rewards.{i}.path")
            models[name] = source
            entry |= {"path": source.reference, "params": inspect_model(source).total_params}
        entries.append(dict(sorted(entry.items())))
    return Rewards(tuple(entries), models, files)


def reward_model_source(loaded: Any, path: str, root: Path, hasher: FileHasher, key: str, known_type: bool = True) -> ModelSource:
    try:
        return resolve_model(path, None, loaded.base_dir, root, hasher, False, known_type=known_type)
    except InputError as exc:
        raise InputError(key, exc.message.replace("model.base", key), exc.hint) from None
