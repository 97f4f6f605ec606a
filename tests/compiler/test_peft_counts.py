"""The trainable-parameter formulas of compiler/methods/peft_counts.py against peft itself: each tiny random Llama is
read the way the compiler reads a model (inspect_model on its config), then wrapped by get_peft_model with the real
config, and the formula must equal peft's get_nb_trainable_parameters()."""

from __future__ import annotations

import pytest
import torch
from peft import (
    AdaLoraConfig,
    IA3Config,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    VeraConfig,
    get_peft_model,
)
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from ftc.compiler.methods.peft_counts import (
    ADALORA_TARGETS,
    IA3_FEEDFORWARD,
    IA3_TARGETS,
    VERA_TARGETS,
    adalora_trainable,
    ia3_trainable,
    p_tuning_trainable,
    prefix_token_dim,
    prefix_tuning_trainable,
    prompt_embeddings_shape,
    prompt_init_token_ids,
    prompt_tuning_trainable,
    targeted_linears,
    unmatched_feedforward,
    unmatched_targets,
    vera_projection_size,
    vera_trainable,
)
from ftc.compiler.plan.inputs import ModelSource
from ftc.compiler.plan.modelinfo import inspect_model

# Three shapes: plain multi-head attention; grouped-query attention (8 query heads, 2 key/value heads); and a head_dim
# that is not hidden_size / heads (q_proj then maps 48 -> 64).
SHAPES = {
    "mha": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4),
    "gqa": dict(hidden_size=64, intermediate_size=80, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2),
    "head_dim": dict(
        hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16
    ),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (LlamaConfig, the ModelInfo the compiler builds from it)."""
    built = {}
    for name, shape in SHAPES.items():
        config = LlamaConfig(vocab_size=128, max_position_embeddings=256, **shape)
        folder = tmp_path_factory.mktemp(name)
        config.save_pretrained(folder)
        built[name] = (config, inspect_model(ModelSource(name, "folder", folder)))
    return built


def peft_count(config: LlamaConfig, peft_config) -> int:
    torch.manual_seed(0)
    return get_peft_model(LlamaForCausalLM(config), peft_config).get_nb_trainable_parameters()[0]


def test_the_models_have_the_shapes_the_formulas_must_handle(models):
    _, gqa = models["gqa"]
    assert (gqa.linear_shapes["model.layers.0.self_attn.k_proj"], prefix_token_dim(gqa)) == ((64, 16), 16)
    _, odd = models["head_dim"]
    assert odd.linear_shapes["model.layers.0.self_attn.q_proj"] == (48, 64)
    assert prefix_token_dim(odd) == 32


IA3_CASES = [
    (list(IA3_TARGETS), list(IA3_FEEDFORWARD)),
    (["q_proj", "v_proj", "up_proj", "down_proj"], ["up_proj", "down_proj"]),
    (["o_proj", "gate_proj"], []),
    ("all-linear", ["down_proj"]),
    ("all-linear", ["own_proj"]),  # peft tests "feedforward" with a plain endswith: this one is down_proj
]


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize(("targets", "feedforward"), IA3_CASES)
def test_ia3_count_is_peft_count(models, shape, targets, feedforward):
    config, info = models[shape]
    expected = peft_count(config, IA3Config(task_type="CAUSAL_LM", target_modules=targets, feedforward_modules=feedforward))
    assert ia3_trainable(info, targets, feedforward) == expected


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize(
    ("targets", "init_r"),
    [(list(ADALORA_TARGETS), 12), (["q_proj", "k_proj", "v_proj", "o_proj"], 4), ("all-linear", 3), (["down_proj"], 1)],
)
def test_adalora_count_is_peft_count(models, shape, targets, init_r):
    config, info = models[shape]
    peft_config = AdaLoraConfig(task_type="CAUSAL_LM", target_modules=targets, init_r=init_r, target_r=1, total_step=10)
    assert adalora_trainable(info, targets, init_r) == peft_count(config, peft_config)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize(("targets", "r"), [(list(VERA_TARGETS), 256), (["k_proj", "down_proj", "up_proj"], 8), ("all-linear", 32)])
def test_vera_count_is_peft_count_and_the_projections_are_not_trained(models, shape, targets, r):
    config, info = models[shape]
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(config), VeraConfig(task_type="CAUSAL_LM", target_modules=targets, r=r))
    assert vera_trainable(info, targets, r) == model.get_nb_trainable_parameters()[0]
    projections = model.base_model.vera_A["default"].numel() + model.base_model.vera_B["default"].numel()
    assert vera_projection_size(info, targets, r) == projections


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("num_virtual_tokens", [1, 20])
def test_prompt_tuning_count_is_peft_count(models, shape, num_virtual_tokens):
    config, info = models[shape]
    peft_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    assert prompt_tuning_trainable(info, num_virtual_tokens) == peft_count(config, peft_config)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize(
    ("kind", "hidden", "layers"),
    [("MLP", None, 2), ("MLP", 24, 2), ("LSTM", None, 2), ("LSTM", 24, 1), ("LSTM", 16, 3)],
)
def test_p_tuning_count_is_peft_count(models, shape, kind, hidden, layers):
    config, info = models[shape]
    peft_config = PromptEncoderConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=10,
        encoder_reparameterization_type=kind,
        encoder_hidden_size=hidden,
        encoder_num_layers=layers,
    )
    assert p_tuning_trainable(info, 10, kind, hidden, layers) == peft_count(config, peft_config)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize(("projection", "hidden", "tokens"), [(False, None, 10), (True, None, 10), (True, 40, 3), (False, 40, 1)])
def test_prefix_tuning_count_is_peft_count(models, shape, projection, hidden, tokens):
    config, info = models[shape]
    peft_config = PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=tokens, prefix_projection=projection, encoder_hidden_size=hidden
    )
    assert prefix_tuning_trainable(info, tokens, projection, hidden) == peft_count(config, peft_config)


def test_a_module_named_twice_is_adapted_once_and_unknown_names_are_reported(models):
    config, info = models["mha"]
    targets = ["q_proj", "self_attn.q_proj", "qproj"]
    assert len(targeted_linears(info, targets)) == 2  # one q_proj per layer
    assert unmatched_targets(info, targets) == ["qproj"]
    assert unmatched_targets(info, "all-linear") == []
    assert vera_trainable(info, targets, 4) == peft_count(config, VeraConfig(task_type="CAUSAL_LM", target_modules=targets, r=4))


def test_a_feedforward_name_that_ends_no_targeted_layer_is_reported(models):
    config, info = models["gqa"]
    feedforward = ["own_proj", "mlp.up_proj", "nothing"]
    assert unmatched_feedforward(info, "all-linear", feedforward) == ["nothing"]
    assert unmatched_feedforward(info, ["k_proj", "down_proj"], ["down_proj", "up_proj"]) == ["up_proj"]
    # peft takes the unmatched name without a word: every other layer scales its output
    peft_config = IA3Config(task_type="CAUSAL_LM", target_modules="all-linear", feedforward_modules=["nothing"])
    assert ia3_trainable(info, "all-linear", []) == peft_count(config, peft_config)


@pytest.mark.parametrize(
    ("adapter", "peft_config"),
    [
        ("prompt_tuning", PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6)),
        ("p_tuning", PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=6, encoder_hidden_size=24)),
        ("prefix_tuning", PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6, prefix_projection=True)),
    ],
)
def test_a_prompt_learning_adapter_saves_one_tensor_of_the_predicted_shape(tmp_path, models, adapter, peft_config):
    config, info = models["head_dim"]
    torch.manual_seed(0)
    get_peft_model(LlamaForCausalLM(config), peft_config).save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert {name: tuple(t.shape) for name, t in saved.items()} == {
        "prompt_embeddings": prompt_embeddings_shape(info, adapter, 6)
    }


@pytest.mark.parametrize("text", ["hello", "The quick brown fox jumps over the lazy dog. Count: one two three"])
def test_text_init_takes_the_tokens_peft_takes(tmp_path, models, text):
    from tiny import make_tokenizer

    tokenizer = make_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    config, _ = models["mha"]
    config = LlamaConfig(**(config.to_dict() | {"vocab_size": len(tokenizer)}))
    torch.manual_seed(0)
    model = get_peft_model(
        LlamaForCausalLM(config),
        PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=8,
            prompt_tuning_init="TEXT",
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=str(tmp_path),
        ),
    )
    ids = prompt_init_token_ids(tokenizer(text)["input_ids"], 8)
    expected = model.get_input_embeddings().weight[torch.tensor(ids)]
    assert torch.equal(model.prompt_encoder["default"].embedding.weight, expected)
    with pytest.raises(ValueError, match="no tokens"):
        prompt_init_token_ids([], 8)


# Trainable-parameter counts peft published for Llama-3.2-3B in its method comparison (huggingface/peft at 5d602fd,
# method_comparison/MetaMathQA/results/<experiment>.json, "num_trainable_params"; the settings are the experiments'
# adapter_config.json). Llama-3.2-3B: hidden 3072, 28 layers, 24 query heads, 8 key/value heads of 128, MLP 8192.
LLAMA_3B = dict(
    vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
    num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
)
ALL_ATTN = ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj", "gate_proj", "up_proj"]
PUBLISHED = [
    ("ia3--llama-3.2-3B-default", lambda i: ia3_trainable(i, IA3_TARGETS, IA3_FEEDFORWARD), 286720),
    ("ia3--llama-3.2-3B-all-attn-5k-lr0.005", lambda i: ia3_trainable(i, ALL_ATTN, ["down_proj", "gate_proj", "up_proj"]), 630784),
    ("adalora--llama-3.2-3B-rank32", lambda i: adalora_trainable(i, ADALORA_TARGETS, 64), 18353664),
    ("vera--llama-3.2-3B-default", lambda i: vera_trainable(i, VERA_TARGETS, 256), 129024),
    ("prompt_tuning--llama-3.2-3B-default", lambda i: prompt_tuning_trainable(i, 200), 614400),
    ("ptuning--llama-3.2-3B-default", lambda i: p_tuning_trainable(i, 20, "MLP", 3072, 2), 28382208),
    ("prefixtuning--llama-3.2-3B-lr_0.001", lambda i: prefix_tuning_trainable(i, 200, False, None), 11468800),
    ("prefixtuning--llama-3.2-3B-tokens50-init_prefix-lr_0.005", lambda i: prefix_tuning_trainable(i, 50, False, None), 2867200),
]


@pytest.fixture(scope="module")
def llama_3b(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama-3.2-3b")
    LlamaConfig(**LLAMA_3B).save_pretrained(folder)
    return inspect_model(ModelSource("llama-3.2-3b", "folder", folder))


@pytest.mark.parametrize(("experiment", "formula", "published"), PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_counts_match_what_peft_published_for_llama_3b(llama_3b, experiment, formula, published):
    assert formula(llama_3b) == published
