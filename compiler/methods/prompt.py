"""The prompt-learning methods: the base stays whole and frozen, and what trains is a set of virtual tokens.

- kind = "prompt_tuning": the virtual tokens' input embeddings (peft's PromptTuningConfig);
- kind = "p_tuning": the same, produced by a small trained encoder, an MLP or an LSTM (PromptEncoderConfig);
- kind = "prefix_tuning": keys and values prepended at every layer (PrefixTuningConfig).

None has weights to fold into the base, so `ftc merge` refuses them (peft's merge_and_unload raises). Prompt and
P-tuning serve through vLLM's prompt embeddings: the learned embeddings are put before the rendered chat request's
(runtime/serve/). Prefix tuning changes every layer's keys and values, which vLLM cannot take: `ftc serve` refuses
it, and `ftc eval` scores it through transformers. Prefix tuning also cannot recompute activations: with gradient
checkpointing, training fails with a tensor-size mismatch (peft#869), because the Trainer switches checkpointing on
after the prefix exists, where peft's own guard does not look.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ftc.compiler.methods.base import MethodDef, MethodPlan, ResolveContext
from ftc.compiler.methods.peft_counts import (
    p_tuning_trainable,
    prefix_token_dim,
    prefix_tuning_trainable,
    prompt_tuning_trainable,
)
from ftc.compiler.schema import SpecModel, free_text

NO_MERGE = "{} learns virtual tokens, not changes to the base's weights: there is nothing to merge (peft's merge_and_unload raises)"
PREFIX_NOT_SERVED = (
    "prefix tuning prepends learned keys and values at every layer, which vLLM cannot take (it serves LoRA adapters "
    "and prompt embeddings only); score it with `ftc eval`, or train prompt_tuning, p_tuning or a LoRA-family method to serve"
)


class PromptLearning(SpecModel):
    num_virtual_tokens: int = Field(
        default=20, ge=1, le=1024, description="How many virtual tokens are learned (each costs a position of context)."
    )


class PromptTuning(PromptLearning):
    kind: Literal["prompt_tuning"] = Field(description="Prompt tuning: learned input embeddings of virtual tokens (peft).")
    prompt_tuning_init: Literal["RANDOM", "TEXT", "SAMPLE_VOCAB"] = Field(
        default="RANDOM",
        description=(
            "How the virtual tokens start: RANDOM, TEXT (the embeddings of prompt_tuning_init_text's tokens, repeated "
            "or cut to num_virtual_tokens) or SAMPLE_VOCAB (embeddings of random vocabulary tokens)."
        ),
    )
    prompt_tuning_init_text: str | None = Field(
        default=None, min_length=1, description="With prompt_tuning_init = \"TEXT\": the text the tokens start from."
    )

    _text = field_validator("prompt_tuning_init_text")(free_text)


class PTuning(PromptLearning):
    kind: Literal["p_tuning"] = Field(description="P-tuning: virtual tokens produced by a trained prompt encoder (peft).")
    encoder_reparameterization_type: Literal["MLP", "LSTM"] = Field(
        default="MLP", description="The prompt encoder: MLP (recommended by peft) or LSTM."
    )
    encoder_hidden_size: int | None = Field(
        default=None, ge=1, le=65536, description="The encoder's hidden size (default: the model's hidden size)."
    )
    encoder_num_layers: int = Field(
        default=2, ge=1, le=16, description="The LSTM's layers (the MLP always has 2; peft ignores this for it)."
    )
    encoder_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout in the prompt encoder.")


class PrefixTuning(PromptLearning):
    kind: Literal["prefix_tuning"] = Field(description="Prefix tuning: learned keys and values at every layer (peft).")
    prefix_projection: bool = Field(
        default=False, description="Produce the prefix through a trained two-layer MLP (more parameters, often steadier)."
    )
    encoder_hidden_size: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="With prefix_projection: the MLP's hidden size (default, as peft's: key/value heads x head_dim).",
    )


class PromptLearningPlan(MethodPlan):
    num_virtual_tokens: int

    serve_as: ClassVar[Literal["weights", "prompt_embeds"] | None] = "prompt_embeds"

    def peft_arguments(self) -> dict[str, Any]:
        skip = {"kind", "adapter", "trainable_params", "total_params"}
        return {key: value for key, value in self if key not in skip}


class PromptTuningPlan(PromptLearningPlan):
    kind: Literal["prompt_tuning"]
    prompt_tuning_init: str
    prompt_tuning_init_text: str | None = None

    omit_when_none = frozenset({"prompt_tuning_init_text"})
    peft_config: ClassVar[str] = "PromptTuningConfig"
    merge_refusal: ClassVar[str | None] = NO_MERGE.format("prompt tuning")


class PTuningPlan(PromptLearningPlan):
    kind: Literal["p_tuning"]
    encoder_reparameterization_type: str
    encoder_hidden_size: int
    encoder_num_layers: int
    encoder_dropout: float

    peft_config: ClassVar[str] = "PromptEncoderConfig"
    merge_refusal: ClassVar[str | None] = NO_MERGE.format("P-tuning")


class PrefixTuningPlan(PromptLearningPlan):
    kind: Literal["prefix_tuning"]
    prefix_projection: bool
    encoder_hidden_size: int | None = None

    omit_when_none = frozenset({"encoder_hidden_size"})
    peft_config: ClassVar[str] = "PrefixTuningConfig"
    merge_refusal: ClassVar[str | None] = NO_MERGE.format("prefix tuning")
    serve_as: ClassVar[Literal["weights", "prompt_embeds"] | None] = None
    serve_refusal: ClassVar[str | None] = PREFIX_NOT_SERVED
    gradient_checkpointing: ClassVar[bool] = False


def _prompt_tuning(method: PromptTuning, ctx: ResolveContext) -> PromptTuningPlan:
    return PromptTuningPlan(
        kind="prompt_tuning",
        adapter="prompt_tuning",
        num_virtual_tokens=method.num_virtual_tokens,
        prompt_tuning_init=method.prompt_tuning_init,
        prompt_tuning_init_text=method.prompt_tuning_init_text,
        trainable_params=prompt_tuning_trainable(ctx.info, method.num_virtual_tokens),
        total_params=ctx.info.total_params,
    )


def _p_tuning(method: PTuning, ctx: ResolveContext) -> PTuningPlan:
    hidden = method.encoder_hidden_size or ctx.info.hidden_size
    kind = method.encoder_reparameterization_type
    return PTuningPlan(
        kind="p_tuning",
        adapter="p_tuning",
        num_virtual_tokens=method.num_virtual_tokens,
        encoder_reparameterization_type=kind,
        encoder_hidden_size=hidden,
        encoder_num_layers=method.encoder_num_layers,
        encoder_dropout=method.encoder_dropout,
        trainable_params=p_tuning_trainable(ctx.info, method.num_virtual_tokens, kind, hidden, method.encoder_num_layers),
        total_params=ctx.info.total_params,
    )


def _prefix_tuning(method: PrefixTuning, ctx: ResolveContext) -> PrefixTuningPlan:
    hidden = (method.encoder_hidden_size or prefix_token_dim(ctx.info)) if method.prefix_projection else None
    return PrefixTuningPlan(
        kind="prefix_tuning",
        adapter="prefix_tuning",
        num_virtual_tokens=method.num_virtual_tokens,
        prefix_projection=method.prefix_projection,
        encoder_hidden_size=hidden,
        trainable_params=prefix_tuning_trainable(ctx.info, method.num_virtual_tokens, method.prefix_projection, hidden),
        total_params=ctx.info.total_params,
    )


def _context(loaded: Any) -> Iterator[Any]:
    """The virtual tokens take positions of the model's context beside the example's own, once per row: packed
    examples would share one set and see each other (peft drops the position ids of packed rows, with a warning)."""
    method, data = loaded.spec.method, loaded.spec.data
    if data.packing:
        yield loaded.diag(
            "data.packing",
            f"packing is not available for {method.kind}: the virtual tokens come once per packed row, and peft drops "
            "the position ids that keep packed examples apart",
            "remove data.packing, or set it to false",
        )
    if method.num_virtual_tokens >= data.max_length:
        yield loaded.diag(
            "method.num_virtual_tokens",
            f"{method.num_virtual_tokens} virtual tokens are as many as data.max_length ({data.max_length})",
            "use far fewer (8-100 are usual)",
        )


def _prompt_tuning_checks(loaded: Any) -> Iterator[Any]:
    method = loaded.spec.method
    if method.prompt_tuning_init == "TEXT" and method.prompt_tuning_init_text is None:
        yield loaded.diag(
            "method.prompt_tuning_init",
            'prompt_tuning_init = "TEXT" starts the virtual tokens from a text, and none is given',
            'add prompt_tuning_init_text = "..." (e.g. a one-line description of the task)',
        )
    elif method.prompt_tuning_init != "TEXT" and method.prompt_tuning_init_text is not None:
        yield loaded.diag(
            "method.prompt_tuning_init_text",
            f'prompt_tuning_init_text has no effect with prompt_tuning_init = "{method.prompt_tuning_init}"',
            'set prompt_tuning_init = "TEXT", or remove the text',
        )
    yield from _context(loaded)


def _p_tuning_checks(loaded: Any) -> Iterator[Any]:
    method = loaded.spec.method
    if method.encoder_reparameterization_type == "MLP" and "encoder_num_layers" in method.model_fields_set:
        yield loaded.diag(
            "method.encoder_num_layers",
            "encoder_num_layers has no effect with the MLP encoder: peft always uses 2 layers",
            'remove it, or set encoder_reparameterization_type = "LSTM"',
        )
    yield from _context(loaded)


def _prefix_tuning_checks(loaded: Any) -> Iterator[Any]:
    spec = loaded.spec
    if spec.method.encoder_hidden_size is not None and not spec.method.prefix_projection:
        yield loaded.diag(
            "method.encoder_hidden_size",
            "encoder_hidden_size sizes the prefix projection, which is off",
            "set prefix_projection = true, or remove encoder_hidden_size",
        )
    if spec.training.gradient_checkpointing:
        yield loaded.diag(
            "training.gradient_checkpointing",
            "prefix tuning cannot train with gradient checkpointing: the run would fail at its first step with a "
            "tensor-size mismatch (peft#869)",
            "set gradient_checkpointing = false (the prefix adds little memory), or use prompt_tuning or p_tuning",
        )
    yield from _context(loaded)


# Learning rates. Prompt tuning (Lester et al. 2021, section 3) trains with 0.3 and Adafactor; with AdamW, peft's
# prompt-based guide (huggingface/peft@9708bee docs/source/task_guides/prompt_based_methods.md) and its causal-LM
# example (examples/causal_language_modeling/peft_prompt_tuning_clm.ipynb) use 3e-2, and peft's comparison on
# Llama-3.2-3B (huggingface/peft@5d602fd method_comparison/MetaMathQA/results/) scores prompt tuning 5.7% at 1e-4 and 23.4% at 1e-3. P-tuning: 1e-3 in
# examples/sequence_classification/P_Tuning.ipynb, 1e-4 in the comparison. Prefix tuning: 1e-2 and 3e-2 in peft's
# examples (sequence_classification/prefix_tuning.ipynb, causal_language_modeling/peft_prefix_tuning_clm.ipynb),
# 5e-3 the comparison's best; Li and Liang (2021, appendix A) train through the projection with 5e-5 to 8e-5.
PROMPT_TUNING = MethodDef(
    kind="prompt_tuning",
    spec=PromptTuning,
    plan=PromptTuningPlan,
    template="sft.py.j2",
    trains_on="demonstrations",
    words="prompt tuning: learned virtual-token embeddings, base frozen",
    key_words="a prompt-tuning setting",
    resolve=_prompt_tuning,
    learning_rate=lambda method: 3e-2,
    learning_rate_range=(1e-3, 3e-1),
    checks=_prompt_tuning_checks,
    packing=False,
    capacity="learn more virtual tokens (method.num_virtual_tokens) or use a method that changes weights (kind = \"lora\")",
)
P_TUNING = MethodDef(
    kind="p_tuning",
    spec=PTuning,
    plan=PTuningPlan,
    template="sft.py.j2",
    trains_on="demonstrations",
    words="P-tuning: virtual tokens from a trained prompt encoder, base frozen",
    key_words="a P-tuning setting",
    resolve=_p_tuning,
    learning_rate=lambda method: 1e-3,
    learning_rate_range=(1e-4, 1e-2),
    checks=_p_tuning_checks,
    packing=False,
    capacity="learn more virtual tokens (method.num_virtual_tokens) or use a method that changes weights (kind = \"lora\")",
)
PREFIX_TUNING = MethodDef(
    kind="prefix_tuning",
    spec=PrefixTuning,
    plan=PrefixTuningPlan,
    template="sft.py.j2",
    trains_on="demonstrations",
    words="prefix tuning: learned keys and values at every layer, base frozen",
    key_words="a prefix-tuning setting",
    resolve=_prefix_tuning,
    learning_rate=lambda method: 1e-2,
    learning_rate_range=(5e-5, 3e-2),
    checks=_prefix_tuning_checks,
    packing=False,
    capacity="learn more virtual tokens (method.num_virtual_tokens), set method.prefix_projection = true, or use kind = \"lora\"",
)
