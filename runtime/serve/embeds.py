"""A prompt-tuning or P-tuning run's prompts as vLLM's prompt embeddings.

peft's PeftModelForCausalLM puts the virtual tokens before every other token (before the BOS the chat template
writes, too) and feeds the base `cat([virtual, embed_tokens(ids)])` as inputs_embeds; nothing else changes
(positions count from the first virtual token, and every token attends to them). What it prepends is what
final/adapter_model.safetensors holds as "prompt_embeddings", [num_virtual_tokens, hidden]: for prompt tuning
the learned embeddings, for P-tuning the prompt encoder's output, which peft computes when it saves the adapter
(and which PeftModel.from_pretrained uses as it is, in inference mode). So the encoder never runs here.

vLLM's /v1/completions takes such a tensor as `prompt_embeds`: base64 of torch.save of a [seq, hidden] tensor
(with --enable-prompt-embeds), cast to the served dtype. Measured on a tiny Llama in float32 (bench/
prompt_embeds_parity.py): 16/16 prompts agree token for token with peft over 32 tokens, prompt and P-tuning.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTER_WEIGHTS = "adapter_model.safetensors"
PROMPT_EMBEDDINGS = "prompt_embeddings"  # peft's key for the virtual tokens (tuners_utils.BasePromptEncoder)
SERVED_PEFT_TYPES = ("PROMPT_TUNING", "P_TUNING")


class EmbedsUnavailable(Exception):
    """final/ holds no virtual tokens ftc can serve as prompt embeddings."""


def load_virtual_tokens(final: Path):
    """The adapter's virtual tokens, [num_virtual_tokens, hidden], as peft prepends them."""
    from safetensors.torch import load_file

    config_file = final / "adapter_config.json"
    if not config_file.is_file() or not (final / ADAPTER_WEIGHTS).is_file():
        raise EmbedsUnavailable(f"{final} holds no peft adapter (adapter_config.json, {ADAPTER_WEIGHTS})")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    kind = config.get("peft_type")
    if kind not in SERVED_PEFT_TYPES:
        raise EmbedsUnavailable(f"{final} holds a {kind} adapter; only prompt tuning and P-tuning are served as prompt embeddings")
    tensors = load_file(str(final / ADAPTER_WEIGHTS))
    if PROMPT_EMBEDDINGS not in tensors:
        raise EmbedsUnavailable(f"{final / ADAPTER_WEIGHTS} has no {PROMPT_EMBEDDINGS!r} tensor")
    virtual = tensors[PROMPT_EMBEDDINGS]
    expected = config.get("num_virtual_tokens", 0) * config.get("num_transformer_submodules", 1)
    if virtual.dim() != 2 or virtual.shape[0] != expected:
        raise EmbedsUnavailable(f"{PROMPT_EMBEDDINGS} has shape {tuple(virtual.shape)}; the adapter config says {expected} virtual tokens")
    return virtual


def encode_embeds(tensor) -> str:
    """vLLM's prompt_embeds value: base64 of torch.save of a [seq, hidden] tensor."""
    import torch

    buffer = io.BytesIO()
    torch.save(tensor.detach().cpu().contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class PromptEmbedder:
    """Token ids to the inputs_embeds peft gives the base: the virtual tokens, then the ids' embeddings."""

    table: Any  # the base's input embedding matrix [vocab, hidden], detached
    virtual: Any  # [num_virtual_tokens, hidden], in the table's dtype

    def __post_init__(self) -> None:
        self.lock = threading.Lock()  # the front embeds in several request threads

    @classmethod
    def from_model(cls, base, final: Path) -> PromptEmbedder:
        table = base.get_input_embeddings().weight.detach().to("cpu").clone()
        virtual = load_virtual_tokens(final)
        if virtual.shape[1] != table.shape[1]:
            raise EmbedsUnavailable(f"the virtual tokens are {virtual.shape[1]} wide and the base's embeddings {table.shape[1]}")
        return cls(table, virtual.to(table.dtype))

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.virtual.shape[0])

    def embeds(self, ids: list[int]):
        """[num_virtual_tokens + len(ids), hidden]: what peft's forward feeds the base for input_ids `ids`."""
        import torch

        if any(not 0 <= i < self.table.shape[0] for i in ids):
            raise ValueError(f"a token id is outside the vocabulary (0 to {self.table.shape[0] - 1})")
        with self.lock, torch.no_grad():
            return torch.cat([self.virtual, self.table[torch.tensor(ids, dtype=torch.long)]], dim=0)

    def payload(self, ids: list[int]) -> str:
        return encode_embeds(self.embeds(ids))
