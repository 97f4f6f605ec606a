"""A load test of `ftc serve` (not a timed test): N concurrent `openai` clients for a fixed time, a share of
them hanging up mid-stream, then the probes a careless or hostile client sends, then Ctrl-C.

What it starts: `python -m ftc.cli serve TARGET` exactly as a user would, with an API key in $FTC_LOAD_KEY and
its output collected. TARGET is --target (a run folder, a spec, or a model folder); without it, a tiny random
Llama (tests/tiny.py, weights std 0.2 so that answers vary) is written to a temporary folder and served as a
model folder with --parity 0 (a model folder has no held-out prompts to check parity on).

What it measures:
  - the load: every client loops until --seconds are up. Clients 0, 4, 8, ... ask for a stream and close it
    after --chunks chunks (a user who gives up); the others alternate plain and streaming chat completions of
    up to --max-tokens tokens. Every request that was not hung up on on purpose must succeed: failures counts
    the ones that did not (by exception), and p50/p99 are the latencies of the completed ones;
  - hung up: the hanging-up clients ask for --hangup-tokens tokens (ignore_eos), so that streams left
    generating would pile up; within 5 s of the end of the load, vLLM's /metrics must show no request still
    running or waiting;
  - wrong key: a request with a wrong key, and one with none, must get HTTP 401;
  - oversized: a prompt three times the served context, max_tokens beyond it, and an 8 MB body must each get
    HTTP 400 (not a 5xx, not a dropped connection);
  - alive after: GET /health answers 200 and one more completion succeeds, the server process is still running,
    and its log holds no Python traceback;
  - Ctrl-C: ftc serve exits 0 and leaves no process behind.

    .venv/bin/python bench/serve_load.py [--clients 16] [--seconds 60] [--target RUN|SPEC|MODEL_DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "FTC_LOAD_KEY"
KEY = "load-key-" + os.urandom(6).hex()
READY = "Ctrl-C stops the server"
TICKETS = [
    "my invoice was charged twice", "the app crashes at login", "I want a refund for the broken rice cooker",
    "how do I reset my password?", "the checkout page shows a 502 error", "please add my VAT number",
]


def tiny_model(folder: Path) -> Path:
    """The tests' tiny Llama with large random weights (std 0.2): its greedy answers vary from token to token."""
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(REPO / "tests"))
    from tiny import make_tiny_llama

    make_tiny_llama(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 0.2)
    model.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`ftc serve` as a user starts it, in its own session, its output collected line by line."""

    def __init__(self, target: Path, port: int, log: Path, extra: list[str], in_process_engine: bool) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", **{KEY_ENV: KEY})
        if in_process_engine:
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        argv = [sys.executable, "-m", "ftc.cli", "serve", str(target), "--port", str(port), "--api-key-env", KEY_ENV,
                "--vllm-log", str(log), *extra]
        self.log = log
        self.proc = subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float) -> float:
        began = time.monotonic()
        while READY not in self.output:
            if self.proc.poll() is not None:
                raise SystemExit(f"ftc serve exited with {self.proc.returncode} before it was ready:\n{self.output}")
            if time.monotonic() - began > timeout:
                self.kill()
                raise SystemExit(f"ftc serve was not ready after {timeout:.0f}s:\n{self.output}")
            time.sleep(0.5)
        return time.monotonic() - began

    def group(self) -> list[int]:
        """ftc serve and every live process below it (vLLM's API server, engine core, workers), from /proc."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
        found, todo = [self.proc.pid], [self.proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return [pid for pid in found if _alive(pid)]

    def interrupt(self) -> tuple[int | None, list[int]]:
        """Ctrl-C; returns ftc serve's exit status and the processes still alive 30 s later."""
        started = self.group()
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(120)
        except subprocess.TimeoutExpired:
            code = None
        deadline = time.monotonic() + 30
        left = started
        while left and time.monotonic() < deadline:
            left = [pid for pid in started if _alive(pid)]
            time.sleep(0.2)
        return code, left

    def kill(self) -> None:
        for pid in self.group():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


# --- the load -----------------------------------------------------------------------------------------------


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, completed requests
    completed: int = 0
    hung_up: int = 0  # streams closed on purpose after a few chunks
    failures: dict[str, int] = field(default_factory=dict)  # "ExceptionType: first words" -> count
    first_failure: str | None = None

    def fail(self, exc: BaseException) -> None:
        name = f"{type(exc).__name__}: {str(exc)[:80]}"
        self.failures[name] = self.failures.get(name, 0) + 1
        self.first_failure = self.first_failure or repr(exc)[:500]


async def client_loop(i: int, client, model: str, deadline: float, max_tokens: int, chunks: int, hangup_tokens: int, tally: Tally) -> None:
    rng = random.Random(i)
    hangs_up = i % 4 == 0
    n = 0
    while time.monotonic() < deadline:
        n += 1
        messages = [{"role": "user", "content": f"{rng.choice(TICKETS)} (client {i}, request {n})"}]
        began = time.monotonic()
        try:
            if hangs_up:
                stream = await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=hangup_tokens, stream=True, extra_body={"ignore_eos": True})
                seen = 0
                async for _ in stream:
                    seen += 1
                    if seen >= chunks:
                        break
                await stream.close()  # the connection drops mid-answer
                tally.hung_up += 1
                continue
            tokens = rng.randint(1, max_tokens)
            if n % 2:
                reply = await client.chat.completions.create(model=model, messages=messages, max_tokens=tokens, temperature=0.8)
                if not reply.choices or reply.usage.completion_tokens < 1:
                    raise RuntimeError(f"an empty answer: {reply}")
            else:
                stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=tokens, stream=True)
                pieces = [chunk async for chunk in stream]
                if not pieces:
                    raise RuntimeError("a stream with no chunks")
            tally.latencies.append(time.monotonic() - began)
            tally.completed += 1
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            tally.fail(exc)


async def load(url: str, model: str, clients: int, seconds: float, max_tokens: int, chunks: int, hangup_tokens: int) -> Tally:
    from openai import AsyncOpenAI

    tally = Tally()
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300)
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client_loop(i, client, model, deadline, max_tokens, chunks, hangup_tokens, tally) for i in range(clients)))
    await client.close()
    return tally


# --- the probes ---------------------------------------------------------------------------------------------


def status_of(url: str, body: dict | bytes | None, key: str | None, path: str = "/v1/chat/completions") -> str:
    """The HTTP status a request gets, or what happened instead (a dropped connection, a timeout)."""
    import httpx

    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    try:
        response = httpx.request("POST" if content is not None else "GET", url + path, content=content, headers=headers, timeout=300)
    except httpx.HTTPError as exc:
        return f"no answer ({type(exc).__name__})"
    return str(response.status_code)


def probes(url: str, model: str, context: int) -> dict[str, str]:
    ask = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    long_prompt = " ".join(["hello world"] * (3 * context))  # about two tokens a pair: far beyond the context
    return {
        "wrong key": status_of(url, ask, "not-the-key"),
        "no key": status_of(url, ask, None),
        "prompt > context": status_of(url, {**ask, "messages": [{"role": "user", "content": long_prompt}]}, KEY),
        "max_tokens > context": status_of(url, {**ask, "max_tokens": 10 * context}, KEY),
        "8 MB body": status_of(url, {**ask, "messages": [{"role": "user", "content": "x" * (8 << 20)}]}, KEY),
        "not JSON": status_of(url, b"{\"model\": ", KEY),
    }


def requests_left(url: str, settle: float = 5) -> str:
    """Requests vLLM still runs or queues (its /metrics) once the load is over: a stream whose client hung up
    must have been aborted, not left generating. Waits up to `settle` seconds for them to finish."""
    import httpx

    deadline = time.monotonic() + settle
    while True:
        try:
            text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).text
        except httpx.HTTPError as exc:
            return f"no metrics ({type(exc).__name__})"
        counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting"))]
        if not counts:
            return "no vllm:num_requests_* metrics"
        if sum(counts) == 0 or time.monotonic() > deadline:
            return f"{sum(counts):g}"
        time.sleep(0.5)


def alive_after(url: str, model: str, server: Server) -> tuple[bool, str]:
    from openai import OpenAI

    health = status_of(url, None, None, "/health")
    try:
        reply = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "still there?"}], max_tokens=4)
        answered = bool(reply.choices)
    except Exception as exc:  # noqa: BLE001 - shown in the table
        return False, f"health {health}, completion failed: {exc!r}"[:200]
    ok = health == "200" and answered and server.proc.poll() is None
    return ok, f"health {health}, completion {'ok' if answered else 'empty'}, process {'running' if server.proc.poll() is None else 'gone'}"


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # started in the background (nohup, &): the ftc serve this
        signal.signal(signal.SIGINT, signal.default_int_handler)  # stops with Ctrl-C must not inherit SIGINT ignored
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--target", type=Path, help="a run folder, a spec or a model folder (default: a tiny random Llama)")
    parser.add_argument("--max-tokens", type=int, default=32, help="longest answer a client asks for")
    parser.add_argument("--chunks", type=int, default=3, help="chunks a hanging-up client reads before it closes the stream")
    parser.add_argument("--hangup-tokens", type=int, default=1000,
                        help="tokens a hanging-up client asks for (ignore_eos): left generating, they would pile up")
    parser.add_argument("--parity", type=int, help="ftc serve --parity (default: 0 for a model folder, ftc's default for a run)")
    parser.add_argument("--in-process-engine", action="store_true", help="VLLM_ENABLE_V1_MULTIPROCESSING=0, as the tests start vLLM")
    parser.add_argument("--ready-timeout", type=float, default=900)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ftc-serve-load-") as tmp:
        target = args.target or tiny_model(Path(tmp) / "tiny-llama")
        parity = args.parity if args.parity is not None else (0 if args.target is None or (target / "config.json").is_file() else None)
        extra = ["--parity", str(parity)] if parity is not None else []
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = Server(target, port, Path(tmp) / "serve.log", extra, args.in_process_engine)
        try:
            ready = server.wait_ready(args.ready_timeout)
            print(f"ftc serve ready after {ready:.0f}s on {url}", flush=True)
            import httpx

            models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).json()["data"]
            model, context = models[0]["id"], models[0].get("max_model_len") or 2048
            began = time.monotonic()
            warm, _ = alive_after(url, model, server)  # the first request pays vLLM's warm-up: not part of the load
            warm_up = time.monotonic() - began
            began = time.monotonic()
            tally = asyncio.run(load(url, model, args.clients, args.seconds, args.max_tokens, args.chunks, args.hangup_tokens))
            took = time.monotonic() - began
            left_running = requests_left(url)
            probed = probes(url, model, context)
            ok, alive = alive_after(url, model, server)
            log = server.log.read_text(encoding="utf-8", errors="replace")
            tracebacks = log.count("Traceback (most recent call last)")
        finally:
            if server.proc.poll() is None:
                code, left = server.interrupt()
            else:
                code, left = server.proc.returncode, []
            if left:
                server.kill()

    failures = sum(tally.failures.values())
    rows = [
        ("clients", f"{args.clients} ({(args.clients + 3) // 4} hang up after {args.chunks} chunks of {args.hangup_tokens} asked for)"),
        ("warm-up request", f"{warm_up:.1f}s ({'ok' if warm else 'FAILED'})"),
        ("seconds", f"{args.seconds:g} (the load took {took:.1f}s to drain)"),
        ("requests", f"{tally.completed + tally.hung_up + failures} ({tally.completed} completed, {tally.hung_up} hung up on purpose)"),
        ("failures", f"{failures}" + "".join(f"\n    {n} x {name}" for name, n in tally.failures.items())),
        ("throughput", f"{tally.completed / took:.1f} completed requests/s"),
        ("p50 latency", f"{percentile(tally.latencies, 0.50) * 1000:.0f} ms"),
        ("p99 latency", f"{percentile(tally.latencies, 0.99) * 1000:.0f} ms"),
        ("requests left running", f"{left_running} (vLLM's /metrics, within 5 s of the load)"),
        *((f"{name}", f"HTTP {status}" if status.isdigit() else status) for name, status in probed.items()),
        ("alive after", f"{'yes' if ok else 'NO'} ({alive})"),
        ("tracebacks in vLLM's log", str(tracebacks)),
        ("Ctrl-C", f"exit {code}, {len(left)} processes left"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if tally.first_failure:
        print(f"first failure: {tally.first_failure}")
    wrong = [name for name, status in probed.items() if status != ("401" if "key" in name else "400")]
    good = failures == 0 and ok and not wrong and code == 0 and not left and left_running == "0"
    print("result:", "PASS" if good else f"FAIL ({', '.join(wrong) or 'see above'})")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
