"""The logging and A/B gateway `ftc serve --log DIR` and `ftc serve --ab ...` put before vLLM.

vLLM (or, for a prompt-tuning run, ftc's front) listens on a private 127.0.0.1 port with a key of its own; the
gateway answers clients on the user's host and port:
  - it checks the user's API key (Authorization: Bearer KEY) when one is configured; that key is never logged;
  - POST /v1/chat/completions and /v1/completions go to an arm (the only one, or one the Router picks by the
    A/B weights, sticky per `user`) unchanged, except that a streaming request asks vLLM for the usage
    (stream_options.include_usage; the usage-only chunk is passed on only if the client asked for it). Streamed
    chunks are passed through as they come, and their text is put together for the log;
  - GET /v1/models is the first arm's, /health is healthy when every arm is;
  - every answer carries X-Request-Id (the client's own, when it sent a usable one, else the answer's id) and,
    in A/B serving, X-Ftc-Arm (the arm's target as the user wrote it);
  - with a log, one Exchange per request (runtime/exchanges.py) is appended after redaction (redact.py).
"""

from __future__ import annotations

import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from ftc.runtime.exchanges import REQUEST_ID_HEADER, Exchange, ExchangeLog, request_id_of
from ftc.runtime.serve.ab import Router
from ftc.runtime.serve.front import MAX_BODY, UPSTREAM_TIMEOUT, ThreadedServer, error_body
from ftc.runtime.serve.redact import Redactor

ARM_HEADER = "X-Ftc-Arm"
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


@dataclass(frozen=True)
class Upstream:
    """One arm: where its server listens, its private key, and what the log says about it."""

    url: str
    key: str
    label: str | None = None  # A/B: the target as the user wrote it; None when one model is served
    run: str | None = None
    plan_sha256: str | None = None


class Gateway:
    def __init__(self, arms: list[Upstream], weights: list[float], key: str | None, log: ExchangeLog | None,
                 redactor: Redactor, seed: int = 0) -> None:
        self.arms, self.key, self.log, self.redactor = arms, key, log, redactor
        self.router = Router(weights, seed)

    def authorized(self, header: str | None) -> bool:
        if self.key is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), f"Bearer {self.key}".encode())

    def request(self, arm: Upstream, method: str, path: str, body: bytes | None = None) -> urllib.request.Request:
        headers = {"Authorization": f"Bearer {arm.key}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return urllib.request.Request(arm.url + path, data=body, method=method, headers=headers)

    def healthy(self) -> bool:
        for arm in self.arms:
            try:
                with urllib.request.urlopen(arm.url + "/health", timeout=5) as response:
                    if response.status != 200:
                        return False
            except (urllib.error.URLError, OSError):
                return False
        return True

    def record(self, began: float, arrived: str, endpoint: str, body: dict[str, Any], arm: Upstream, rid: str, status: int,
               answer: str | None, finish: str | None, usage: dict[str, Any] | None, error: str | None) -> None:
        """Redact and append one exchange (nothing when logging is off)."""
        if self.log is None:
            return
        redactions = 0
        messages = prompt = None
        if endpoint == "chat" and isinstance(body.get("messages"), list):
            messages, redactions = self.redactor.value([m if isinstance(m, dict) else {"content": m} for m in body["messages"]])
        elif endpoint == "completions":
            raw = body.get("prompt")
            text = raw if isinstance(raw, str) else "\n".join(raw) if isinstance(raw, list) and all(isinstance(p, str) for p in raw) else json.dumps(raw)
            prompt, redactions = self.redactor.text(text)
        if answer is not None:
            answer, count = self.redactor.text(answer)
            redactions += count
        if error is not None:
            error, count = self.redactor.text(error)
            redactions += count
        usage = usage if isinstance(usage, dict) else {}
        self.log.append(Exchange(
            id=rid, time=arrived, endpoint=endpoint, model=str(body.get("model")), arm=arm.label, run=arm.run,
            plan_sha256=arm.plan_sha256, messages=tuple(messages) if messages is not None else None, prompt=prompt,
            answer=answer, finish_reason=finish, prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"), latency_ms=round((time.monotonic() - began) * 1000, 1),
            status=status, error=error, stream=body.get("stream") is True, redactions=redactions,
        ))


def _upstream_error(exc: urllib.error.HTTPError) -> tuple[int, bytes, str]:
    data = exc.read()
    try:
        message = json.loads(data)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = data.decode("utf-8", "replace")[:1000]
    return exc.code, data, str(message)


def _choice_text(choice: dict[str, Any], endpoint: str, delta: bool) -> str:
    if endpoint == "completions":
        return choice.get("text") or ""
    part = choice.get("delta" if delta else "message") or {}
    return part.get("content") or ""


class _Handler(BaseHTTPRequestHandler):
    gateway: Gateway  # set on the subclass GatewayServer builds
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the exchange log (when asked for) and vLLM's log keep what happened

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(error_body(message, status)).encode("utf-8"), headers)

    def _authorized(self) -> bool:
        if self.gateway.authorized(self.headers.get("Authorization")):
            return True
        self._error(HTTPStatus.UNAUTHORIZED, "Unauthorized: send the API key as Authorization: Bearer KEY")
        return False

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/health":
            ok = self.gateway.healthy()
            self._send(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, b"" if ok else json.dumps(error_body("the model server is not ready", 503)).encode())
        elif path == "/v1/models":
            if not self._authorized():
                return
            try:
                with urllib.request.urlopen(self.gateway.request(self.gateway.arms[0], "GET", path), timeout=30) as response:
                    self._send(response.status, response.read())
            except urllib.error.HTTPError as exc:
                status, data, _ = _upstream_error(exc)
                self._send(status, data)
            except (urllib.error.URLError, OSError) as exc:
                self._error(HTTPStatus.BAD_GATEWAY, f"the model server did not answer: {exc}")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route {path}")

    def do_POST(self) -> None:
        began, arrived = time.monotonic(), datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        path = self.path.split("?")[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the request is over {MAX_BODY} bytes")
            return
        raw = self.rfile.read(length)
        rid = request_id_of(self.headers.get(REQUEST_ID_HEADER))
        refused = {REQUEST_ID_HEADER: rid} if rid else {}
        if path not in ENDPOINTS:
            self._error(HTTPStatus.NOT_FOUND, f"no route {path}", refused)
            return
        if not self.gateway.authorized(self.headers.get("Authorization")):
            self._error(HTTPStatus.UNAUTHORIZED, "Unauthorized: send the API key as Authorization: Bearer KEY", refused)
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"the request body is not JSON: {exc}", refused)
            return
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object", refused)
            return
        gateway = self.gateway
        arm = gateway.arms[gateway.router.pick(body.get("user"))]
        endpoint = ENDPOINTS[path]
        stream = body.get("stream") is True
        asked_usage = stream and isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage") is True
        sent = dict(body)
        if stream and not asked_usage:
            sent["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        headers = {ARM_HEADER: arm.label} if arm.label is not None else {}
        try:
            response = urllib.request.urlopen(gateway.request(arm, "POST", path, json.dumps(sent).encode("utf-8")), timeout=UPSTREAM_TIMEOUT)
        except urllib.error.HTTPError as exc:
            status, data, message = _upstream_error(exc)
            rid = rid or f"ftc-{uuid.uuid4().hex}"
            self._send(status, data, {**headers, REQUEST_ID_HEADER: rid})
            gateway.record(began, arrived, endpoint, body, arm, rid, status, None, None, None, message)
            return
        except (urllib.error.URLError, OSError) as exc:
            rid = rid or f"ftc-{uuid.uuid4().hex}"
            message = f"the model server did not answer: {exc}"
            self._error(HTTPStatus.BAD_GATEWAY, message, {**headers, REQUEST_ID_HEADER: rid})
            gateway.record(began, arrived, endpoint, body, arm, rid, HTTPStatus.BAD_GATEWAY, None, None, None, message)
            return
        with response:
            if stream:
                self._stream(response, began, arrived, endpoint, body, arm, rid, headers, asked_usage)
                return
            data = response.read()
            try:
                reply = json.loads(data)
                choice = reply["choices"][0] if reply.get("choices") else {}
            except (ValueError, AttributeError, KeyError, TypeError):
                reply, choice = {}, {}
            rid = rid or str(reply.get("id") or f"ftc-{int(time.time() * 1000)}")
            self._send(response.status, data, {**headers, REQUEST_ID_HEADER: rid})
            gateway.record(began, arrived, endpoint, body, arm, rid, response.status, _choice_text(choice, endpoint, False),
                           choice.get("finish_reason"), reply.get("usage"), None)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(self, response, began: float, arrived: str, endpoint: str, body: dict[str, Any], arm: Upstream,
                rid: str | None, headers: dict[str, str], asked_usage: bool) -> None:
        """Server-sent events passed through event by event; the first choice's text is put together for the log."""
        parts: list[str] = []
        finish = usage = error = None

        def events():
            lines: list[bytes] = []
            for line in response:
                lines.append(line)
                if line in (b"\n", b"\r\n"):
                    yield b"".join(lines)
                    lines = []
            if lines:
                yield b"".join(lines)

        started = False
        try:
            for event in events():
                payload = event.strip().removeprefix(b"data:").strip()
                keep = True
                if payload and payload != b"[DONE]":
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        chunk = {}
                    if rid is None and chunk.get("id"):
                        rid = str(chunk["id"])
                    for choice in chunk.get("choices") or []:
                        if choice.get("index", 0) == 0:
                            parts.append(_choice_text(choice, endpoint, True))
                            finish = choice.get("finish_reason") or finish
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        keep = asked_usage or bool(chunk.get("choices"))
                    if "error" in chunk:
                        error = str((chunk.get("error") or {}).get("message", chunk["error"]))
                if not started:
                    rid = rid or f"ftc-{uuid.uuid4().hex}"
                    self.send_response(response.status)
                    self.send_header("Content-Type", response.headers.get("Content-Type", "text/event-stream"))
                    self.send_header("Transfer-Encoding", "chunked")
                    for name, value in {**headers, REQUEST_ID_HEADER: rid}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    started = True
                if keep:
                    self._chunk(event)
            if not started:
                rid = rid or f"ftc-{uuid.uuid4().hex}"
                self.send_response(response.status)
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header(REQUEST_ID_HEADER, rid)
                self.end_headers()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            error = "the client went away before the answer was complete"
            self.close_connection = True
        except (OSError, http.client.HTTPException) as exc:  # vLLM stopped answering halfway
            error = f"the model server's answer broke off: {exc}"
            self.close_connection = True
        self.gateway.record(began, arrived, endpoint, body, arm, rid or "", response.status, "".join(parts), finish, usage, error)


class GatewayServer(ThreadedServer):
    """The gateway on host:port."""

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        super().__init__(type("Handler", (_Handler,), {"gateway": gateway}), host, port)
