"""How many parameters peft trains for each adapter method beyond LoRA, from the model's shapes alone.

Pure arithmetic on `ModelInfo` (no torch, no peft): the resolver calls these for the plan's `trainable_params`, and
tests/compiler/test_peft_counts.py checks each against peft's own `get_nb_trainable_parameters()` on real models.
Every formula follows the layer peft 0.21.2 builds; the file and line is named beside each.

Target names match as peft matches a list of names (peft/tuners/tuners_utils.py `check_target_module_exists`): a
module is adapted when its dotted name equals an entry or ends with "." + the entry. "all-linear" is every
nn.Linear except the output embedding (`_maybe_include_all_linear_layers`), which is what `ModelInfo.linear_shapes`
holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from ftc.compiler.plan.modelinfo import ModelInfo, lora_trainable, targeted_linears

Targets = Sequence[str] | Literal["all-linear"]

# peft's default target_modules for model_type "llama", from peft/utils/constants.py in peft 0.21.2 (mistral's are the
# same; for IA3 qwen2, qwen3 and gemma take q_proj where llama takes k_proj). peft uses them when target_modules is
# None; ftc writes them out instead.
IA3_TARGETS = ("k_proj", "v_proj", "down_proj")  # TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING["llama"], :209
IA3_FEEDFORWARD = ("down_proj",)  # TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING["llama"], :261
ADALORA_TARGETS = ("q_proj", "v_proj")  # TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING["llama"], :289
VERA_TARGETS = ("q_proj", "v_proj")  # TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING, LoRA's copied: :85, :141


def unmatched_targets(info: ModelInfo, targets: Targets) -> list[str]:
    """The target names that match no linear layer of the model (peft adapts the rest and ignores these silently;
    it raises only when none matches). The rule is LoRA's: every peft tuner matches names the same way."""
    return lora_trainable(info, list(targets) if targets != "all-linear" else targets, 1)[1]


def ia3_trainable(info: ModelInfo, target_modules: Targets, feedforward_modules: Sequence[str]) -> int:
    """(IA)^3: one learned scale per feature of each targeted layer (peft/tuners/ia3/layer.py:62-66). A feedforward
    layer scales its input (in_features values), any other its output (out_features values). Whether a layer is
    feedforward is tested on its full dotted name with a plain `endswith`, no dot required
    (peft/tuners/ia3/model.py:184-192, `_check_target_module_feedforward`)."""
    return sum(
        i if any(name.endswith(entry) for entry in feedforward_modules) else o
        for name, (i, o) in targeted_linears(info, target_modules).items()
    )


def unmatched_feedforward(info: ModelInfo, target_modules: Targets, feedforward_modules: Sequence[str]) -> list[str]:
    """The feedforward names that end no targeted layer's name. peft refuses a feedforward name missing from a list
    of target_modules (IA3Config's subset check), but with "all-linear" it checks nothing, and such a name silently
    scales no input."""
    names = targeted_linears(info, target_modules)
    return [entry for entry in feedforward_modules if not any(name.endswith(entry) for name in names)]


def adalora_trainable(info: ModelInfo, target_modules: Targets, init_r: int) -> int:
    """AdaLoRA: per targeted layer lora_A (init_r x in), lora_E (init_r x 1) and lora_B (out x init_r)
    (peft/tuners/adalora/layer.py:69-73); `ranknum` is frozen. Masking ranks later zeroes entries of lora_E but
    removes no parameter, so the count stays this for the whole run."""
    return sum(init_r * (i + o + 1) for i, o in targeted_linears(info, target_modules).values())


def vera_trainable(info: ModelInfo, target_modules: Targets, r: int) -> int:
    """VeRA: per targeted layer vera_lambda_b (out) and vera_lambda_d (r) (peft/tuners/vera/layer.py:89-90). The
    shared random projections vera_A and vera_B are buffers, not parameters: peft does not count or train them."""
    return sum(o + r for _, o in targeted_linears(info, target_modules).values())


def vera_projection_size(info: ModelInfo, target_modules: Targets, r: int) -> int:
    """The values in VeRA's shared projections: vera_A (r x the largest in_features) and vera_B (the largest
    out_features x r) over the targeted layers (peft/tuners/vera/model.py `_find_dim`, `_init_vera_A_vera_B`). They
    are frozen, but held in memory and, with save_projection = true (peft's default), written into the adapter."""
    shapes = targeted_linears(info, target_modules).values()
    if not shapes:
        return 0
    return r * max(i for i, _ in shapes) + max(o for _, o in shapes) * r


def prompt_tuning_trainable(info: ModelInfo, num_virtual_tokens: int) -> int:
    """Prompt tuning: an embedding of num_virtual_tokens x hidden_size (peft/tuners/prompt_tuning/model.py:66-67;
    a causal LM has one transformer submodule, peft/peft_model.py:664)."""
    return num_virtual_tokens * info.hidden_size


def p_tuning_trainable(
    info: ModelInfo,
    num_virtual_tokens: int,
    encoder_reparameterization_type: Literal["MLP", "LSTM"],
    encoder_hidden_size: int | None,
    encoder_num_layers: int,
) -> int:
    """P-tuning: a virtual-token embedding and the prompt encoder that reparameterizes it while training
    (peft/tuners/p_tuning/model.py). encoder_hidden_size None is peft's default, the model's hidden size
    (peft/utils/other.py:1234-1235). MLP: three linear layers, d->h->h->d, whatever encoder_num_layers says (peft only
    warns that it is ignored). LSTM: a bidirectional LSTM of encoder_num_layers layers, then 2h->2h->d.
    Only the encoder's output for the virtual tokens is saved in the adapter, not the encoder."""
    if encoder_reparameterization_type not in ("MLP", "LSTM"):  # peft raises on any other name
        raise ValueError(f"unknown encoder_reparameterization_type {encoder_reparameterization_type!r}")
    d = info.hidden_size
    h = encoder_hidden_size or d
    embedding = num_virtual_tokens * d
    if encoder_reparameterization_type == "MLP":
        return embedding + (d * h + h) + (h * h + h) + (h * d + d)
    # torch.nn.LSTM: per layer and direction, weight_ih (4h x input), weight_hh (4h x h), bias_ih and bias_hh (4h);
    # the first layer reads the embedding (d), the others both directions of the layer below (2h).
    lstm = sum(2 * (4 * h * ((d if layer == 0 else 2 * h) + h) + 8 * h) for layer in range(encoder_num_layers))
    head = (2 * h * 2 * h + 2 * h) + (2 * h * d + d)
    return embedding + lstm + head


def prefix_token_dim(info: ModelInfo) -> int:
    """The width of one layer's key (or value) prefix per virtual token: head_dim x num_key_value_heads. With
    grouped-query attention peft sizes the prefix for the key/value heads, not the query heads
    (peft/utils/other.py:1197-1232)."""
    return info.head_dim * info.num_key_value_heads


def prefix_tuning_trainable(
    info: ModelInfo, num_virtual_tokens: int, prefix_projection: bool, encoder_hidden_size: int | None
) -> int:
    """Prefix tuning: a key and a value prefix for every layer (peft/tuners/prefix_tuning/model.py:66-79). Without
    projection they are learned directly: num_virtual_tokens x (num_layers x 2 x token_dim). With projection an
    embedding of token_dim passes through token_dim -> encoder_hidden_size -> num_layers x 2 x token_dim, where
    token_dim is `prefix_token_dim` and encoder_hidden_size None means token_dim (peft/utils/other.py:1234-1235)."""
    t = prefix_token_dim(info)
    prefix = info.num_layers * 2 * t
    if not prefix_projection:
        return num_virtual_tokens * prefix
    h = encoder_hidden_size or t
    return num_virtual_tokens * t + (t * h + h) + (h * prefix + prefix)


def prompt_embeddings_shape(
    info: ModelInfo, adapter: Literal["prompt_tuning", "p_tuning", "prefix_tuning"], num_virtual_tokens: int
) -> tuple[int, int]:
    """The one tensor a prompt-learning adapter saves, "prompt_embeddings" in adapter_model.safetensors: the virtual
    tokens as the model receives them (peft/peft_model.py `get_prompt_embedding_to_save`). P-tuning saves its
    encoder's output, not the encoder, so the file is far smaller than the trained parameters; prefix tuning saves
    every layer's key and value prefix, projected when prefix_projection is set."""
    if adapter == "prefix_tuning":
        return (num_virtual_tokens, info.num_layers * 2 * prefix_token_dim(info))
    return (num_virtual_tokens, info.hidden_size)


def prompt_init_token_ids(text_ids: Sequence[int], num_virtual_tokens: int) -> list[int]:
    """The token ids peft initializes prompt tuning from with prompt_tuning_init = "TEXT": the tokenized text (special
    tokens included) cut to num_virtual_tokens, or repeated until it fills them
    (peft/tuners/prompt_tuning/model.py:88-96). peft divides by the text's length: an empty one raises
    ZeroDivisionError."""
    if not text_ids:
        raise ValueError("the init text tokenizes to no tokens")
    return (list(text_ids) * math.ceil(num_virtual_tokens / len(text_ids)))[:num_virtual_tokens]
