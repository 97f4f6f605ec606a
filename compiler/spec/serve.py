"""[serve]: how `ftc serve` exposes the merged model through vLLM's OpenAI-compatible server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ftc.compiler.schema import SpecModel, env_var_name, host_address, one_line


class Serve(SpecModel):
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=253,
        description="Address to bind: an IP address or a host name. Loopback by default.",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port.")
    served_model_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Model name clients ask for, up to 256 characters on one line; unset means the project name.",
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the API key clients must send. Unset: no auth.",
    )
    max_model_len: int | None = Field(
        default=None, ge=16, le=16_777_216, description="Longest context served; unset means data.max_length."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Serving dtype. 'auto' is bfloat16 on CUDA and float32 on the CPU."
    )

    _check_host = field_validator("host")(host_address)
    _check_served_model_name = field_validator("served_model_name")(one_line)
    _check_api_key_env = field_validator("api_key_env")(env_var_name)
