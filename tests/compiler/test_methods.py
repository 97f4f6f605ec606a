"""The method registry (ftc.compiler.methods): every method is declared once, and everything that needs to know
about methods asks the registry. Checked for each registered method, so that a new one is checked too."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from ftc.compiler.build.render import templates_dir
from ftc.compiler.methods import METHOD_KINDS, METHODS, AnyMethodPlan, Method, ResolveContext
from ftc.compiler.methods.base import SCRIPT_SUPPORT, utilization_of
from ftc.compiler.plan.modelinfo import ModelInfo
from ftc.compiler.spec import Spec

H, LAYERS, MLP, VOCAB = 64, 2, 128, 100


def tiny_info() -> ModelInfo:
    linear = {}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        for name, shape in {"self_attn.q_proj": (H, H), "self_attn.k_proj": (H, H), "self_attn.v_proj": (H, H), "self_attn.o_proj": (H, H),
                            "mlp.gate_proj": (H, MLP), "mlp.up_proj": (H, MLP), "mlp.down_proj": (MLP, H)}.items():
            linear[f"{p}.{name}"] = shape
    total = sum(i * o for i, o in linear.values()) + VOCAB * H
    return ModelInfo(
        architecture="LlamaForCausalLM", model_type="llama", hidden_size=H, num_layers=LAYERS, vocab_size=VOCAB,
        max_position_embeddings=512, total_params=total, linear_shapes=linear, param_counts={"model": total, "lm_head": 0},
        num_attention_heads=4, num_key_value_heads=4, head_dim=16, intermediate_size=MLP,
    )


def _union_kinds(union) -> set[str]:
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields["kind"].annotation)[0] for m in members}


def test_the_unions_are_the_registry():
    assert set(METHOD_KINDS) == set(METHODS) == _union_kinds(Method) == _union_kinds(AnyMethodPlan)
    assert Spec.model_fields["method"].annotation == typing.get_args(Method)[0]
    for kind, method in METHODS.items():
        assert method.kind == kind
        assert typing.get_args(method.spec.model_fields["kind"].annotation) == (kind,)
        assert typing.get_args(method.plan.model_fields["kind"].annotation) == (kind,)


@pytest.mark.parametrize("kind", METHOD_KINDS)
def test_each_method_declares_what_the_others_read(kind):
    method = METHODS[kind]
    for template in method.templates:
        assert (templates_dir() / template).is_file(), template
    assert method.templates[1:] == (*SCRIPT_SUPPORT, *method.support)
    assert method.trains_on in ("demonstrations", "preferences", "unpaired", "prompts")
    assert method.words and method.key_words
    assert method.lighter is None or method.lighter in METHODS
    given = method.starter or {}
    tables = [method.spec.model_validate({"kind": kind, **given})]
    if "adapter" in method.spec.model_fields:
        tables.append(method.spec.model_validate({"kind": kind, "adapter": "none", **given}))
    for table in tables:
        assert 0 < method.learning_rate(table) < 1  # prompt tuning trains embeddings at 3e-2
        low_high = method.usual_learning_rates(table)
        if low_high is not None:
            assert low_high[0] <= method.learning_rate(table) <= low_high[1]
    assert 0 < utilization_of(method.plan, "lora") <= 1 and 0 < utilization_of(method.plan, "none") <= 1


@pytest.mark.parametrize("kind", METHOD_KINDS)
def test_each_method_resolves_a_frozen_plan_entry_that_round_trips(kind):
    info = tiny_info()
    table = METHODS[kind].spec.model_validate({"kind": kind, **(METHODS[kind].starter or {})})
    entry = METHODS[kind].resolve(table, ResolveContext(info=info, accelerator="auto"))
    assert entry.kind == kind and entry.total_params == info.total_params
    assert 0 < entry.trainable_params <= info.total_params
    assert (entry.trainable_params < info.total_params) == (entry.adapter != "none")
    assert entry.produces_adapter == (entry.adapter != "none" and kind != "reward")  # a reward model's adapter is folded in
    with pytest.raises(ValidationError):
        entry.kind = "full"  # frozen
    again = type(entry).model_validate(entry.model_dump(mode="json"))
    assert again == entry
    assert None not in entry.model_dump(mode="json").values()  # an absent setting is left out, never written as null


def test_method_entries_hold_what_their_library_takes():
    info = tiny_info()
    context = ResolveContext(info=info, accelerator="auto")
    lora = METHODS["lora"].resolve(METHODS["lora"].spec(kind="lora", r=4, target_modules=["q_proj"]), context)
    assert (lora.r, lora.target_modules, lora.trainable_params) == (4, ["q_proj"], LAYERS * 4 * (H + H))
    qlora = METHODS["qlora"].resolve(METHODS["qlora"].spec(kind="qlora"), ResolveContext(info=info, accelerator="cpu"))
    assert qlora.bnb_4bit_compute_dtype == {"cpu": "float32"} and qlora.quantized_base
    dpo_full = METHODS["dpo"].resolve(METHODS["dpo"].spec(kind="dpo", adapter="none"), context)
    assert dpo_full.r is None and "r" not in dpo_full.model_dump(mode="json")
    assert dpo_full.trainable_params == info.total_params and dpo_full.reference_forward and dpo_full.sequences_per_example == 2
    with pytest.raises(ValidationError):
        METHODS["full"].plan.model_validate({**METHODS["full"].resolve(METHODS["full"].spec(kind="full"), context).model_dump(), "r": 8})


def test_a_lora_key_under_another_kind_names_the_kind_it_belongs_to(tmp_path):
    from ftc.compiler.spec.validate import parse

    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[project]\nname = "x"\n[model]\nbase = "m"\n[data]\ntrain = "t.jsonl"\n[method]\nkind = "full"\nr = 8\nbeta = 0.2\n',
        encoding="utf-8",
    )
    _, diags = parse(spec)
    hints = {d.key: d.hint for d in diags}
    assert hints["method.r"] == '"r" is a LoRA setting; set kind = "lora" to use it'
    assert hints["method.beta"] == '"beta" is a DPO setting; set kind = "dpo" to use it'
