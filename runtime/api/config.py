"""`ftc api`'s own settings file (TOML): where it listens, the variable that holds its key, where jobs live, and the
base models it offers. Each model names, per OpenAI method type, the ftc spec a job of that type starts from: its
model, method settings, data limits, hardware and evaluation. A job replaces the spec's project name, data files,
seed and the hyperparameters the request sets, and nothing else.

    [server]
    host = "127.0.0.1"            # the default; another address needs api_key_env
    port = 8100
    api_key_env = "FTC_API_KEY"   # clients send the key as `Authorization: Bearer ...` (openai: api_key=...)
    state = "api-state"           # files, jobs, builds and runs, relative to this file

    [models."smollm2-135m"]       # what clients pass as `model`
    supervised = "specs/quickstart.toml"
    dpo = "specs/dpo.toml"
    reinforcement = "specs/grpo.toml"

Problems are diagnostics at file:line with the key, as a spec's are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from ftc.compiler.diagnostics import Diagnostic, SpecError
from ftc.compiler.schema import SpecModel, env_var_name
from ftc.compiler.spec.syntax import read_toml
from ftc.runtime.serve.settings import is_loopback

METHOD_TYPES = ("supervised", "dpo", "reinforcement")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a name that reads the same inside "ft:NAME:suffix:id"


class ServerTable(SpecModel):
    host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind; 127.0.0.1 unless you set a key.")
    port: int = Field(default=8100, ge=1, le=65535, description="TCP port of the API, and of the served models behind it.")
    api_key_env: str | None = Field(default=None, description="Environment variable that holds the key clients must send.")
    state: str = Field(default="api-state", min_length=1, description="Folder for uploaded files and jobs, relative to this file.")
    parity: int = Field(default=8, ge=1, le=256, description="Held-out prompts the served model must answer as transformers does.")
    ready_timeout: float = Field(default=900, gt=0, le=86_400, description="Seconds vLLM may take to start.")

    _check_env = field_validator("api_key_env")(env_var_name)


class ModelTable(SpecModel):
    supervised: str | None = Field(default=None, description="The spec a supervised job starts from.")
    dpo: str | None = Field(default=None, description="The spec a DPO job starts from (method.kind = \"dpo\").")
    reinforcement: str | None = Field(default=None, description="The spec a reinforcement job starts from (grpo or rloo).")
    description: str | None = Field(default=None, max_length=500, description="Shown in /v1/models' owned_by.")


class ConfigFile(SpecModel):
    server: ServerTable = Field(default_factory=ServerTable)
    models: dict[str, ModelTable] = Field(min_length=1, description="The base models jobs may name, by the name clients use.")


@dataclass(frozen=True)
class ApiConfig:
    path: Path
    server: ServerTable
    models: dict[str, dict[str, Path]]  # model name -> method type -> its spec (absolute)

    @property
    def state(self) -> Path:
        return (self.path.parent / self.server.state).resolve()

    def spec_for(self, model: str, method: str) -> Path | None:
        return self.models.get(model, {}).get(method)


def load_config(path: Path) -> ApiConfig:
    """Read and check the settings file; SpecError holds every problem, each at its line."""
    display = str(path)
    text = path.read_text(encoding="utf-8")
    raw, smap, problem = read_toml(text, display)
    if problem is not None:
        raise SpecError([problem])

    def at(keys: tuple, message: str, hint: str | None = None) -> Diagnostic:
        span = smap.locate(keys) if smap is not None else None
        return Diagnostic("error", display, span.line if span else 1, span.col if span else 1, ".".join(map(str, keys)), message, hint)

    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([at(tuple(e["loc"]), e["msg"], _hint(e)) for e in exc.errors()]) from None
    problems, models = [], {}
    if not is_loopback(parsed.server.host) and parsed.server.api_key_env is None:
        problems.append(at(("server", "host"), f"ftc api would listen on {parsed.server.host} without a key", "set server.api_key_env, or bind 127.0.0.1"))
    for name, table in parsed.models.items():
        if not MODEL_NAME.match(name):
            problems.append(at(("models", name), f"model name {name!r} must be 1 to 64 letters, digits, '.', '_' or '-'", "rename it"))
        specs = {}
        for method in METHOD_TYPES:
            written = getattr(table, method)
            if written is None:
                continue
            spec = (path.parent / written).resolve()
            if not spec.is_file():
                problems.append(at(("models", name, method), f"spec not found: {written} (relative to {display})", "give the path of an ftc spec"))
            specs[method] = spec
        if not specs:
            problems.append(at(("models", name), f"model {name} names no spec", f"set at least one of {', '.join(METHOD_TYPES)}"))
        models[name] = specs
    if problems:
        raise SpecError(problems)
    return ApiConfig(path=path.resolve(), server=parsed.server, models=models)


def _hint(error: dict) -> str | None:
    if error["type"] == "extra_forbidden":
        return "remove it: [server] takes host, port, api_key_env, state, parity, ready_timeout; [models.NAME] takes supervised, dpo, reinforcement, description"
    return None
