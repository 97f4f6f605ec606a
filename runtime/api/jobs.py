"""A fine-tuning job request -> a job folder with its own ftc spec, and the job object clients see.

The spec is the server's spec for the model and method (config.py), read as data and written back as TOML with the
job's values in place: project.name is the job id; data.train (and data.validation) are the uploaded files, copied
into the job folder, in whatever format they are (OpenAI's, or ftc's: "auto" detects it); project.seed, the
epochs, batch size and learning rate come from the request when it sets them. Nothing in a request becomes code:
each value is a number or a file id, checked before it is written, and strings are written through one TOML
escaper. Paths in the server's spec (a local base model, a chat template, a schema) are made absolute, since the
spec now lives in the job folder. [export] and [serve] are dropped: the API serves the merged model itself.
"""

from __future__ import annotations

import math
import shutil
import tomllib
from pathlib import Path
from typing import Any

from ftc.compiler.methods import METHODS
from ftc.compiler.spec.starter import toml_string, toml_value
from ftc.compiler.spec.validate import parse
from ftc.runtime.api.config import ApiConfig
from ftc.runtime.api.graders import items_to_chats, rewards_for
from ftc.runtime.api.requests import JobRequest, RequestProblem
from ftc.runtime.api.store import JOB_PREFIX, PRIVATE, Store, new_id, now

SPEC, TRAIN, VALIDATION = "spec.toml", "train.jsonl", "validation.jsonl"
# keys of a spec that hold a path relative to the spec's folder
PATH_KEYS = (("model", "base"), ("model", "chat_template"), ("method", "reference"), ("evaluation", "json_schema"))
REWARD_PATH_KEYS = ("schema", "path")


def fine_tuned_name(model: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{model}:{suffix or ''}:{job_id}"


def _absolute(value: Any, folder: Path) -> Any:
    if not isinstance(value, str) or value.startswith("pkg:") or Path(value).is_absolute():
        return value
    candidate = folder / value
    return str(candidate.resolve()) if candidate.exists() else value


def job_spec(template: Path, job_id: str, request: JobRequest, settings: dict[str, Any], validation: bool) -> dict[str, Any]:
    """The job's spec as tables (see the module docstring)."""
    raw = tomllib.loads(template.read_text(encoding="utf-8"))
    folder = template.parent
    for table, key in PATH_KEYS:
        if key in raw.get(table, {}):
            raw[table][key] = _absolute(raw[table][key], folder)
    for reward in raw.get("method", {}).get("rewards", []):
        for key in REWARD_PATH_KEYS:
            if key in reward:
                reward[key] = _absolute(reward[key], folder)
    raw.pop("export", None)
    raw.pop("serve", None)
    project = raw.setdefault("project", {})
    project["name"] = job_id
    project["description"] = f"ftc api job {job_id}: {request.method_type} on {request.model}"
    if request.seed is not None:
        project["seed"] = request.seed
    data = raw.setdefault("data", {})
    data.update(train=TRAIN, format="auto")
    data.pop("validation", None)
    if validation:
        data["validation"] = VALIDATION
        data.pop("validation_split", None)
    elif "validation_split" not in data:
        raw.pop("evaluation", None)  # nothing is held out to evaluate on
        for key in ("eval_steps", "early_stopping_patience"):
            raw.get("training", {}).pop(key, None)
    training = raw.setdefault("training", {})
    if "n_epochs" in settings:
        training.pop("max_steps", None)
        training["epochs"] = settings["n_epochs"]
    if "batch_size" in settings:
        size = settings["batch_size"]
        training["batch_size"] = size
        training.pop("gradient_accumulation_steps", None)
        micro = training.get("micro_batch_size")
        if isinstance(micro, int):
            training["micro_batch_size"] = math.gcd(size, micro)
    if "learning_rate_multiplier" in settings:
        training["learning_rate"] = settings["learning_rate_multiplier"] * default_learning_rate(template)
    if "beta" in settings:
        raw.setdefault("method", {})["beta"] = settings["beta"]
    return raw


def default_learning_rate(template: Path) -> float:
    """The learning rate a multiplier of 1 means: the server spec's, else its method's default."""
    loaded, _ = parse(template)
    if loaded is None:
        raise RequestProblem(f"the server's spec {template} does not validate; run `ftc validate {template}`", status=500)
    spec = loaded.spec
    return spec.training.learning_rate if spec.training.learning_rate is not None else METHODS[spec.method.kind].learning_rate(spec.method)


def dump_toml(raw: dict[str, Any]) -> str:
    """Tables of plain values as TOML: each table's values, then its subtables, then its arrays of tables."""
    lines: list[str] = ["# written by `ftc api` for one fine-tuning job; the lock beside it records what was resolved", ""]

    def table(path: list[str], values: dict[str, Any], header: str | None) -> None:
        plain = {k: v for k, v in values.items() if not isinstance(v, dict) and not _is_tables(v)}
        if header is not None:
            lines.append(header)
        lines.extend(f"{_key(k)} = {toml_value(v)}" for k, v in plain.items())
        lines.append("")
        for key, value in values.items():
            dotted = ".".join(_key(p) for p in [*path, key])
            if isinstance(value, dict):
                table([*path, key], value, f"[{dotted}]")
            elif _is_tables(value):
                for item in value:
                    table([*path, key], item, f"[[{dotted}]]")

    for name, values in raw.items():
        table([name], values, f"[{_key(name)}]")
    return "\n".join(lines).rstrip("\n") + "\n"


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() and name.isascii() else toml_string(name)


def _training_file(store: Store, file_id: str | None, param: str) -> Path | None:
    if file_id is None:
        return None
    meta = store.file(file_id)
    if meta is None:
        raise RequestProblem(f"invalid {param}: {file_id}: no such file", param, 400, "invalid_file")
    if meta["purpose"] != "fine-tune":
        raise RequestProblem(f"invalid {param}: {file_id} was uploaded with purpose {meta['purpose']}, not fine-tune", param)
    return store.file_path(file_id)


def create_job(store: Store, config: ApiConfig, request: JobRequest) -> dict[str, Any]:
    """Check the request against the server's models and files, write the job folder, and queue it for validation."""
    method = request.method_type
    graded = rewards_for(request.method.reinforcement.grader) if method == "reinforcement" else None
    if request.model not in config.models:
        known = ", ".join(sorted(config.models))
        raise RequestProblem(f"model {request.model!r} is not offered by this server (it offers: {known})", "model", 400, "model_not_available")
    template = config.spec_for(request.model, method)
    if template is None:
        raise RequestProblem(f"model {request.model} has no spec for {method} jobs in {config.path.name}", "method.type")
    settings = request.settings()
    train = _training_file(store, request.training_file, "training_file")
    validation = _training_file(store, request.validation_file, "validation_file")
    job_id = new_id(JOB_PREFIX)
    raw = job_spec(template, job_id, request, settings, validation is not None)
    folder = store.job_dir(job_id)
    folder.mkdir(parents=True)
    left_out: dict[str, int] = {}
    missing: dict[str, list[int]] = {}
    for source, name in ((train, TRAIN), (validation, VALIDATION)):
        if source is None:
            continue
        if graded is None:
            shutil.copyfile(source, folder / name)
            continue
        rewards, field, literal = graded
        raw["method"]["rewards"] = rewards
        read = {r["field"] for r in rewards if r.get("field")}
        dropped, lines = items_to_chats(source, folder / name, field, literal, read)
        for key, count in dropped.items():
            left_out[key] = left_out.get(key, 0) + count
        if lines:
            missing[name] = lines
    (folder / SPEC).write_text(dump_toml(raw), encoding="utf-8")
    kind = method if request.method is not None else "supervised"
    job = {
        "id": job_id, "object": "fine_tuning.job", "created_at": now(), "model": request.model,
        "training_file": request.training_file, "validation_file": request.validation_file,
        "status": "validating_files", "error": None, "fine_tuned_model": None, "finished_at": None,
        "estimated_finish": None, "organization_id": "ftc", "result_files": [], "trained_tokens": None,
        "seed": raw["project"].get("seed", 42), "integrations": [], "metadata": request.metadata,
        "user_provided_suffix": request.suffix,
        "hyperparameters": {k: settings.get(k, "auto") for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
        "method": {"type": kind, kind: {"hyperparameters": {k: settings.get(k, "auto") for k in _keys(kind)}, **({"grader": request.method.reinforcement.grader} if graded else {})}},
        PRIVATE: {
            "suffix": request.suffix, "spec": SPEC, "run_dir": None,
            "missing_reference": {"field": graded[1], "lines": missing} if missing else None,
        },
    }
    with store.lock:  # the queue's order: one number per job
        job[PRIVATE]["sequence"] = store.next_sequence()
        store.save_job(job)
    store.add_event(job_id, f"Created fine-tuning job: {job_id}")
    store.add_event(job_id, f"Validating training file: {request.training_file}" + (f" and validation file: {request.validation_file}" if validation else ""))
    if graded is not None:
        names = ", ".join(f"{r['kind']} (weight {r['weight']:g})" for r in raw["method"]["rewards"])
        store.add_event(job_id, f"The grader becomes ftc rewards: {names}; each item's reference answer is {'item.' + graded[1] if graded[1] else repr(graded[2])}")
    if left_out:
        shown = ", ".join(f"{k} ({n} items)" for k, n in sorted(left_out.items()))
        store.add_event(job_id, f"Item fields no grader reads were left out of the training records: {shown}", level="warn")
    return job


def _keys(kind: str) -> tuple[str, ...]:
    return ("n_epochs", "batch_size", "learning_rate_multiplier", *(("beta",) if kind == "dpo" else ()))


def resolved_hyperparameters(lock: dict[str, Any], template: Path, kind: str) -> dict[str, Any]:
    """What the planner chose, in OpenAI's terms: a run set by max_steps reports the epochs those steps make."""
    training = lock["training"]
    epochs = training["epochs"]
    if epochs is None and training.get("max_steps") and training.get("steps_per_epoch"):
        epochs = round(training["max_steps"] / training["steps_per_epoch"], 4)
    chosen = {
        "n_epochs": epochs,
        "batch_size": training["batch_size"],
        "learning_rate_multiplier": round(training["learning_rate"] / default_learning_rate(template), 6),
    }
    if kind == "dpo":
        chosen["beta"] = lock["method"].get("beta")
    return chosen
