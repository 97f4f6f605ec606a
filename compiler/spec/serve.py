"""[serve]: how `ftc serve` exposes the merged model through vLLM's OpenAI-compatible server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ftc.compiler.schema import SpecModel, env_var_name


class Serve(SpecModel):
    host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind. Loopback by default.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port.")
    served_model_name: str | None = Field(
        default=None, description="Model name clients ask for; unset means the project name."
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the API key clients must send. Unset: no auth.",
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="Longest context served; unset means data.max_length."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Serving dtype. 'auto' is bfloat16 on CUDA and float32 on the CPU."
    )

    _check_api_key_env = field_validator("api_key_env")(env_var_name)
