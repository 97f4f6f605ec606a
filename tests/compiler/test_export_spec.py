"""[export] in the spec and the plan: defaults per format, overrides, and the refusals that need the plan."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from ftc.compiler.plan.resolve import resolve_export
from ftc.compiler.spec.export import GATE_DEFAULTS, Export, check_export_plan


def test_every_format_has_a_default_gate_and_the_spec_overrides_it():
    plan = resolve_export(Export(formats=["q8_0", "w4a16"], examples=30, gate={"w4a16": {"min_top1": 0.6, "max_size_mib": 200.0}}))
    assert plan.formats == ["q8_0", "w4a16"] and plan.examples == 30
    assert (plan.gates["q8_0"].min_top1, plan.gates["q8_0"].max_metric_drop) == GATE_DEFAULTS["q8_0"]
    assert plan.gates["q8_0"].max_size_mib is None
    assert plan.gates["w4a16"].min_top1 == 0.6 and plan.gates["w4a16"].max_metric_drop == GATE_DEFAULTS["w4a16"][1]
    assert plan.gates["w4a16"].max_size_mib == 200.0
    assert resolve_export(None) is None


def test_bad_tables_are_refused():
    with pytest.raises(ValidationError, match="more than once"):
        Export(formats=["q8_0", "q8_0"])
    with pytest.raises(ValidationError):
        Export(formats=[])
    with pytest.raises(ValidationError):
        Export(formats=["q8_0"], gate={"q8_0": {"min_top1": 1.5}})
    with pytest.raises(ValidationError):
        Export(formats=["gguf"])


def test_gguf_is_refused_for_an_architecture_the_writer_does_not_map():
    loaded = SimpleNamespace(spec=SimpleNamespace(export=Export(formats=["w8a8", "q8_0", "f16"])), diag=lambda key, message, hint: (key, message, hint))
    qwen = SimpleNamespace(model=SimpleNamespace(architecture="Qwen2ForCausalLM"))
    ((key, message, hint),) = check_export_plan(loaded, qwen)  # one diagnostic, on the first GGUF format
    assert key == "export.formats.1" and "Qwen2ForCausalLM" in message and "LlamaForCausalLM" in message and "w8a8" in hint
    assert list(check_export_plan(loaded, SimpleNamespace(model=SimpleNamespace(architecture="LlamaForCausalLM")))) == []
