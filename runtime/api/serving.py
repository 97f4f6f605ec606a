"""The tuned models behind `ftc api`'s one address. A succeeded job's merged model is served by `ftc serve` (vLLM
after the parity gate) on a private 127.0.0.1 port with a key of its own; ftc api forwards /v1/chat/completions and
/v1/completions for `model="ft:..."` to it. A model is listed in /v1/models once its gate has passed (recorded in
the job, so a restart keeps the list).

One model is served at a time (vLLM holds the whole model and its KV cache): a request for another listed model
stops the one being served and starts it, which takes as long as vLLM takes to start (20 to 60 s for a small model
on a 2-core CPU). A request that arrives while its model starts waits for it.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ftc.runtime.api.config import ApiConfig
from ftc.runtime.api.store import LOGS, PRIVATE, Store
from ftc.runtime.serve.vllm import parent_death_signal

UPSTREAM_KEY_ENV = "FTC_API_UPSTREAM_KEY"  # the private key between ftc api and its vLLM; never on a command line
READY = "ready: "  # how `ftc serve` says the gate passed and the server answers
SERVE_LOG, VLLM_LOG = "ftc-serve.log", "vllm.log"  # in the job's logs/: ftc serve's output, and vLLM's


class NotServed(Exception):
    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.message, self.status = message, status


@dataclass
class Upstream:
    name: str
    process: subprocess.Popen
    url: str
    key: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serving(threading.Thread):
    """Starts and stops `ftc serve` from this one long-lived thread: a child's PR_SET_PDEATHSIG fires when the thread
    that started it ends, and a request's thread ends long before the model stops being served."""

    def __init__(self, store: Store, config: ApiConfig) -> None:
        super().__init__(name="ftc-api-serving", daemon=True)
        self.store, self.config = store, config
        self.requests: queue.Queue[tuple[str | None, Future]] = queue.Queue()
        self.current: Upstream | None = None

    def listed(self) -> list[dict[str, Any]]:
        """The fine-tuned models whose parity gate passed, as /v1/models lists them."""
        return [job for job in self.store.jobs() if job["status"] == "succeeded" and job[PRIVATE].get("served") == "passed"]

    def job_of(self, model: str) -> dict[str, Any] | None:
        return next((j for j in self.store.jobs() if j["fine_tuned_model"] == model and j["status"] == "succeeded"), None)

    def gate(self, job: dict[str, Any]) -> None:
        """Serve a job's model as soon as it succeeds, so that its gate runs then (in the background)."""
        self.requests.put((job["fine_tuned_model"], Future()))

    def upstream(self, model: str) -> Upstream:
        """The server of `model`, started (and the other one stopped) when needed; waits while it starts."""
        current = self.current
        if current is not None and current.name == model and current.process.poll() is None:
            return current
        future: Future = Future()
        self.requests.put((model, future))
        return future.result()

    def run(self) -> None:
        while True:
            model, future = self.requests.get()
            if model is None:
                self._stop()
                future.set_result(None)
                return
            try:
                future.set_result(self._ensure(model))
            except NotServed as exc:
                future.set_exception(exc)
            except Exception as exc:  # a bug of ours must not stop serving every other model
                future.set_exception(NotServed(f"ftc api could not serve {model}: {type(exc).__name__}: {exc}", 500))

    def _ensure(self, model: str) -> Upstream:
        job = self.job_of(model)
        if job is None:
            raise NotServed(f"The model `{model}` does not exist or you do not have access to it.", 404)
        if job[PRIVATE].get("served") == "failed":
            raise NotServed(f"{model} failed its parity gate and is not served: {job[PRIVATE].get('serve_error', '')}", 503)
        if self.current is not None and self.current.name == model and self.current.process.poll() is None:
            return self.current
        self._stop()
        self.current = self._start(job)
        return self.current

    def _start(self, job: dict[str, Any]) -> Upstream:
        job_id, model = job["id"], job["fine_tuned_model"]
        folder = self.store.job_dir(job_id)
        port, key = _free_port(), secrets.token_urlsafe(24)
        argv = [
            sys.executable, "-m", "ftc.cli", "serve", job[PRIVATE]["run_dir"], "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", model, "--api-key-env", UPSTREAM_KEY_ENV, "--parity", str(self.config.server.parity),
            "--ready-timeout", str(self.config.server.ready_timeout), "--log", str(folder / LOGS / VLLM_LOG),
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{UPSTREAM_KEY_ENV: key})
        self.store.add_event(job_id, f"Starting vLLM for {model} (parity gate first)")
        process = subprocess.Popen(
            argv, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, preexec_fn=parent_death_signal(),
        )
        lines: list[str] = []
        with (folder / LOGS / SERVE_LOG).open("a", encoding="utf-8") as log:
            for line in process.stdout:  # ends when ftc serve exits
                log.write(line)
                log.flush()
                lines.append(line.rstrip())
                if line.startswith(READY):
                    threading.Thread(target=_drain, args=(process, folder / LOGS / SERVE_LOG), daemon=True).start()
                    upstream = Upstream(model, process, f"http://127.0.0.1:{port}", key)
                    self.store.update_job(job_id, **{PRIVATE: {"served": "passed", "max_model_len": _max_model_len(upstream)}})
                    if job[PRIVATE].get("served") != "passed":
                        self.store.add_event(job_id, f"{model} passed the parity gate and is served")
                    return upstream
        process.wait()
        why = "\n".join(lines[-12:])
        gate_failed = process.returncode == 1 and any("parity gate failed" in line for line in lines)
        if gate_failed:
            self.store.update_job(job_id, **{PRIVATE: {"served": "failed", "serve_error": why[-2000:]}})
        self.store.add_event(job_id, f"{model} is not served: ftc serve exited with status {process.returncode}:\n{why}", level="error")
        raise NotServed(f"{model} could not be served (ftc serve exited with status {process.returncode}); see the job's events", 503)

    def _stop(self) -> None:
        """Stop the model being served (SIGTERM: `ftc serve` stops vLLM's process group)."""
        current, self.current = self.current, None
        if current is None or current.process.poll() is not None:
            return
        current.process.send_signal(signal.SIGTERM)
        try:
            current.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            current.process.kill()
            current.process.wait()

    def close(self) -> None:
        """Stop serving, and this thread, once the requests before this one are done."""
        if self.is_alive():
            done: Future = Future()
            self.requests.put((None, done))
            try:
                done.result(timeout=120)
            except TimeoutError:  # a model still starting: ftc serve gets SIGTERM when this process ends
                pass


def _max_model_len(upstream: Upstream) -> int | None:
    """The context vLLM serves the model with, which /v1/models passes on (`ftc eval --endpoint` sizes its requests
    by it)."""
    request = urllib.request.Request(upstream.url + "/v1/models", headers={"Authorization": f"Bearer {upstream.key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            cards = json.loads(response.read()).get("data", [])
    except (OSError, ValueError):
        return None
    return next((card.get("max_model_len") for card in cards if card.get("id") == upstream.name), None)


def _drain(process: subprocess.Popen, log) -> None:
    """Keep reading a served model's output into its log, so that its pipe never fills."""
    with open(log, "a", encoding="utf-8") as fh:
        for line in process.stdout:
            fh.write(line)
            fh.flush()
    process.wait()
