"""[model]: the base model, where its weights come from and how it is loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ftc.compiler.schema import SpecModel, env_var_name, one_line, path_text


class Model(SpecModel):
    base: str = Field(
        min_length=1,
        description=(
            "The base model: a local Hugging Face folder or .gguf file (relative to the spec), a hub id "
            "such as 'HuggingFaceTB/SmolLM2-135M-Instruct' (read from the local hub cache; nothing is "
            "downloaded at compile time), or 'pkg:<python-package>/<file>' for a file shipped inside an "
            "installed Python package."
        ),
    )
    revision: str | None = Field(
        default=None,
        max_length=256,
        description=(
            "Hub ids only: a branch, tag or commit sha. The compiler resolves it to a commit sha, "
            "which the lock records."
        ),
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description=(
            "dtype the weights are loaded in. 'auto' is bfloat16 on CUDA and float32 on the CPU."
        ),
    )
    chat_template: str = Field(
        default="auto",
        description=(
            "'auto' uses the tokenizer's own chat template; otherwise a path (relative to the spec) "
            "to a .jinja file. The template is copied into the build and saved with every adapter "
            "and merged model, so what is trained is what is served."
        ),
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Allow the model's own Python code to run. Only allowed with a pinned commit `revision`.",
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        default="auto",
        description="Attention kernel. 'auto' lets transformers choose (SDPA where available).",
    )
    token_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding a hub token, for gated models.",
    )

    _check_paths = field_validator("base", "chat_template")(path_text)
    _check_revision = field_validator("revision")(one_line)
    _check_token_env = field_validator("token_env")(env_var_name)
