"""[serve]: how `ftc serve` exposes the merged model through vLLM's OpenAI-compatible server, and what its opt-in
exchange log keeps (`log`, redacted by `log_redact` and `log_patterns` before anything is written)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from ftc.compiler.schema import SpecModel, env_var_name, host_address, one_line, path_text

# Built-in redactions: name -> (pattern, marker). Emails; API keys and tokens (sk-..., hf_..., ghp_..., AKIA...,
# Bearer ...); numbers of 6 or more digits, spaces, dots or dashes (phone, card and account numbers).
REDACTIONS: dict[str, tuple[str, str]] = {
    "email": (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "[EMAIL]"),
    "key": (
        (
            r"\b(?:sk|pk|rk|hf|ghp|gho|ghs|ghu|glpat|xox[abpr])[-_][A-Za-z0-9_-]{12,}|\bAKIA[0-9A-Z]{16}\b"
            r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{12,}"
        ),
        "[KEY]",
    ),
    "number": (r"(?<![\w.])\+?\d(?:[ .-]?\d){5,}(?![\w])", "[NUMBER]"),
}
PATTERN_MARKER = "[REDACTED]"  # what a log_patterns match becomes


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

    log: str | None = Field(
        default=None,
        min_length=1,
        description="Folder for the exchange log (one JSON line per request, redacted), relative to the project root; "
        "unset: nothing is logged unless `ftc serve --log DIR` asks.",
    )
    log_redact: list[Literal["email", "key", "number"]] = Field(
        default=["email", "key"],
        description="Built-in redactions applied before an exchange is written: email -> [EMAIL], key (API keys, "
        "tokens) -> [KEY], number (6+ digits: phone, card, account numbers) -> [NUMBER]. [] turns them off.",
    )
    log_patterns: list[str] = Field(
        default=[],
        description="More redactions: Python regular expressions, each match written as [REDACTED].",
    )
    log_max_mb: int = Field(
        default=64, ge=1, le=1_000_000, description="Size in MiB at which the exchange log starts its next file."
    )

    _check_host = field_validator("host")(host_address)
    _check_log = field_validator("log")(path_text)
    _check_served_model_name = field_validator("served_model_name")(one_line)
    _check_api_key_env = field_validator("api_key_env")(env_var_name)

    @field_validator("log_redact")
    @classmethod
    def _check_log_redact(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a redaction twice")
        return value

    @field_validator("log_patterns")
    @classmethod
    def _check_log_patterns(cls, value: list[str]) -> list[str]:
        for k, pattern in enumerate(value):
            if not pattern:
                raise ValueError(f"pattern {k + 1} is empty")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {k + 1} ({pattern!r}) is not a regular expression: {exc}") from exc
            if compiled.match(""):
                raise ValueError(f"pattern {k + 1} ({pattern!r}) matches the empty string; it would redact nothing useful")
        return value
