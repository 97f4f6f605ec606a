"""What `ftc serve` was asked for (ServeOptions: the command line) and what it runs with (Settings: the lock's
serve section for a run, overridden by the command line), and the checks that refuse before anything starts: the
API key's variable is set, the port is free."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftc.runtime.serve.ab import ArmSpec
    from ftc.runtime.serve.target import Target

DEFAULT_PARITY = 8


class ServeRefused(Exception):
    """The target or the options cannot be served as asked (nothing was started). Exit 2."""


@dataclass(frozen=True)
class ServeOptions:
    """What the command line asked for; None means: from the lock's serve section, or the default."""

    target: Path
    adapter: bool = False
    export: str | None = None  # serve RUN/exports/<format>/ (compressed-tensors) instead of merged/
    host: str | None = None
    port: int | None = None
    dtype: str | None = None
    max_model_len: int | None = None
    served_model_name: str | None = None
    api_key_env: str | None = None
    chat_template: Path | None = None
    parity: int = DEFAULT_PARITY
    parity_tokens: int | None = None
    min_agreement: float = 1.0
    prompts: Path | None = None
    kv_cache_gib: float | None = None
    ready_timeout: float = 900
    log: Path | None = None  # vLLM's output (--vllm-log); default RUN/serve.log
    exchanges: Path | None = None  # --log DIR: the exchange log folder (default: the lock's serve.log, else none)
    ab: tuple[ArmSpec, ...] = ()  # --ab: the arms, each a target as the user wrote it and its weight


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    device: str  # "cpu" or "cuda"
    dtype: str  # what vLLM computes in
    max_model_len: int | None
    served_model_name: str
    api_key_env: str | None



def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_settings(options: ServeOptions, target: Target, device: str) -> Settings:
    """The lock's serve section (for a run), overridden by the command line."""
    serve = target.run.lock.serve if target.run else None  # a model folder of your own has no plan
    host = options.host or (serve.host if serve else "127.0.0.1")  # beyond loopback only when the spec or --host says so
    locked_dtype = serve.dtype.get(device) if serve else None
    dtype = options.dtype if options.dtype not in (None, "auto") else locked_dtype or ("float32" if device == "cpu" else "bfloat16")
    if target.export and options.dtype in (None, "auto"):
        dtype = "bfloat16"  # vLLM computes compressed-tensors checkpoints in 16 bits (W4A16 fails in float32)
    name = options.served_model_name or (serve.served_model_name if serve else Path(target.model).name)
    return Settings(
        host=host,
        port=options.port or (serve.port if serve else 8000),
        device=device,
        dtype=dtype,
        max_model_len=options.max_model_len or (serve.max_model_len if serve else None),
        served_model_name=name,
        api_key_env=options.api_key_env or (serve.api_key_env if serve else None),
    )


def api_key(settings: Settings) -> str | None:
    if settings.api_key_env is None:
        return None
    value = os.environ.get(settings.api_key_env)
    if not value:
        raise ServeRefused(
            f"serve.api_key_env names {settings.api_key_env}, and ${settings.api_key_env} is not set (or empty); "
            f"export the key clients must send as {settings.api_key_env}"
        )
    return value


def check_port_free(host: str, port: int) -> None:
    """A server already listening there would answer /health in vLLM's place."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServeRefused(f"cannot listen on {host}:{port} ({exc.strerror}); is a server already running there? pick another with --port") from exc
