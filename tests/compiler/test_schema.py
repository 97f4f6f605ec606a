"""The schema is the one source of documentation: every field is described, unknown keys are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pydantic
import pytest

from ftc.compiler.spec import Dpo, Full, Lora, Qlora, Spec

MINIMAL = {"project": {"name": "x"}, "model": {"base": "m"}, "data": {"train": "t.jsonl"}, "method": {"kind": "lora"}}


def _models(model: type[pydantic.BaseModel], seen: set) -> None:
    if model in seen:
        return
    seen.add(model)
    for info in model.model_fields.values():
        for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
                _models(arg, seen)


def all_models() -> set:
    seen: set = set()
    for model in (Spec, Full, Lora, Qlora, Dpo):
        _models(model, seen)
    return seen


@pytest.mark.parametrize("model", sorted(all_models(), key=lambda m: m.__name__), ids=lambda m: m.__name__)
def test_every_field_has_a_description(model):
    missing = [name for name, info in model.model_fields.items() if not info.description]
    assert not missing, f"{model.__name__}: {missing}"


@pytest.mark.parametrize("model", sorted(all_models(), key=lambda m: m.__name__), ids=lambda m: m.__name__)
def test_models_forbid_unknown_keys_and_are_frozen(model):
    assert model.model_config["extra"] == "forbid"
    assert model.model_config["frozen"] is True


def test_method_is_a_discriminated_union():
    spec = Spec.model_validate({**MINIMAL, "method": {"kind": "qlora"}})
    assert isinstance(spec.method, Qlora)
    with pytest.raises(pydantic.ValidationError) as exc:
        Spec.model_validate({**MINIMAL, "method": {"kind": "lorra"}})
    assert exc.value.errors()[0]["type"] == "union_tag_invalid"


def test_spec_is_frozen():
    spec = Spec.model_validate(MINIMAL)
    with pytest.raises(pydantic.ValidationError):
        spec.project.seed = 1  # type: ignore[misc]


def test_ftc_schema_prints_json_schema():
    result = subprocess.run([sys.executable, "-m", "ftc.cli", "schema"], capture_output=True, text=True, check=True)
    schema = json.loads(result.stdout)
    assert schema["title"] == "Spec"
    assert {"project", "model", "data", "method"} <= set(schema["required"])
    assert schema["additionalProperties"] is False
