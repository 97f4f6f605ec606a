"""What the compiler needs to know about a model without loading its weights: its config (shapes and
parameter counts, from a meta-device instance), its tokenizer's special tokens, and its chat template."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ftc.compiler.plan.inputs import InputError, ModelSource


@dataclass(frozen=True)
class ModelInfo:
    architecture: str
    model_type: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    max_position_embeddings: int | None
    total_params: int
    linear_shapes: dict[str, tuple[int, int]]  # module name -> (in_features, out_features), lm_head excluded
    param_counts: dict[str, int]  # top-level module name -> parameter count
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int  # the MLP's inner width
    module_params: dict[str, int] = field(default_factory=dict)  # every module's dotted name -> its parameter count


@dataclass(frozen=True)
class TokenizerInfo:
    chat_template: str | None
    eos_token: str | None
    pad_token: str | None
    bos_token: str | None
    tokenizer_class: str


@contextlib.contextmanager
def _quiet():
    """transformers logs progress and warnings while parsing GGUF; the compiler's output stays clean. Only while
    it reads the model: the level is put back, so that warnings after it still show."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _fingerprint(source: ModelSource) -> tuple:
    return (str(source.local_dir), source.gguf_file, tuple(sorted(source.files.items())))


@functools.lru_cache(maxsize=8)
def _tokenizer(fingerprint: tuple, where: str, gguf_file: str | None):
    from transformers import AutoTokenizer

    kwargs = {"local_files_only": True, **({"gguf_file": gguf_file} if gguf_file else {})}
    with _quiet():
        return AutoTokenizer.from_pretrained(where, **kwargs)


def load_tokenizer(source: ModelSource):
    """The model's tokenizer (cached per set of file hashes: compiling twice in one process loads it once).
    Raises InputError at model.base when transformers cannot read it (a damaged or truncated file)."""
    try:
        return _tokenizer(_fingerprint(source), str(source.local_dir), source.gguf_file)
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises on a damaged file, the user needs the file named
        raise _unreadable(source, "tokenizer", exc) from None


def _unreadable(source: ModelSource, what: str, exc: Exception) -> InputError:
    """transformers' failure to read a model's files, as a diagnostic: which model, what failed, and what to do."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return InputError(
        "model.base",
        f"transformers cannot read the {what} of {source.reference}: {type(exc).__name__}: {reason[:300]}",
        "the model's files are damaged, truncated or of a kind this transformers does not support; download or convert it again",
    )


def tokenizer_info(tokenizer) -> TokenizerInfo:
    return TokenizerInfo(
        chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token,
        bos_token=tokenizer.bos_token,
        tokenizer_class=type(tokenizer).__name__,
    )


def inspect_model(source: ModelSource) -> ModelInfo:
    """Shapes and parameter counts from a meta-device instance: exact, and no weights are read.
    Raises InputError at model.base when transformers cannot read the config."""
    try:
        return _inspect(_fingerprint(source), str(source.local_dir), source.gguf_file)
    except Exception as exc:  # noqa: BLE001 - as in load_tokenizer
        raise _unreadable(source, "config", exc) from None


@functools.lru_cache(maxsize=8)
def _inspect(fingerprint: tuple, where: str, gguf_file: str | None) -> ModelInfo:
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {"local_files_only": True, **({"gguf_file": gguf_file} if gguf_file else {})}
    with _quiet():
        config = AutoConfig.from_pretrained(where, **kwargs)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    output = model.get_output_embeddings()
    linear = {
        name: (m.in_features, m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m is not output
    }
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    every = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_modules() if name}
    text = getattr(config, "text_config", None) or config
    heads = text.num_attention_heads
    return ModelInfo(
        architecture=(config.architectures or [type(model).__name__])[0],
        model_type=config.model_type,
        hidden_size=text.hidden_size,
        num_layers=text.num_hidden_layers,
        vocab_size=text.vocab_size,
        max_position_embeddings=getattr(text, "max_position_embeddings", None),
        total_params=total,
        linear_shapes=linear,
        param_counts=counts,
        num_attention_heads=heads,
        num_key_value_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        intermediate_size=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
        module_params=every,
    )


def targeted_linears(info: ModelInfo, targets: Sequence[str] | str) -> dict[str, tuple[int, int]]:
    """The linear layers peft adapts for `targets` (its suffix matching: the dotted name equals an entry or ends with
    "." + the entry; "all-linear" is every linear layer but the output head), each once however many entries match
    it: name -> (in_features, out_features)."""
    if targets == "all-linear":
        return dict(info.linear_shapes)
    return {
        name: shape
        for name, shape in info.linear_shapes.items()
        if any(name == target or name.endswith("." + target) for target in targets)
    }


def lora_trainable(info: ModelInfo, targets: Sequence[str] | str, r: int) -> tuple[int, list[str]]:
    """LoRA parameters for `targets`, and the target names that matched nothing."""
    unmatched = [] if targets == "all-linear" else [t for t in targets if not targeted_linears(info, [t])]
    return sum(r * (i + o) for i, o in targeted_linears(info, targets).values()), unmatched
