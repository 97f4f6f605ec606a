"""The OpenAI-compatible front `ftc serve` puts before vLLM for a prompt-tuning or P-tuning run.

vLLM cannot load such an adapter; it takes prompt embeddings instead (embeds.py). Clients send ordinary requests
to the front, on the host and port the user asked for; vLLM listens on a private 127.0.0.1 port with a key of
its own. The front:
  - checks the API key (Authorization: Bearer KEY), when one is configured;
  - /v1/chat/completions: renders the messages with the run's locked chat template (and its generation prompt),
    tokenizes them without special tokens (the template wrote them), as the parity reference and vLLM's own chat
    endpoint do; /v1/completions: a prompt string (special tokens added unless add_special_tokens is false) or
    a list of token ids;
  - prepends the virtual tokens, sends the embeddings to vLLM's /v1/completions as prompt_embeds with the
    request's sampling parameters, and reshapes the answer into the endpoint's format (prompt_token_ids are the
    request's own tokens, without the virtual ones);
  - /v1/models names the served model, /health is vLLM's.
It refuses (HTTP 400, OpenAI's error shape) what it does not carry over: streaming, tools, response formats,
echo, prompt logprobs, several prompts in one request, and any key it does not know.
"""

from __future__ import annotations

import hmac
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ftc.runtime.generate import prompt_ids, render_prompt

MAX_BODY = 16 * 1024 * 1024  # bytes of a request body
UPSTREAM_TIMEOUT = 3600  # seconds one request to vLLM may take
# sampling parameters that mean the same on /v1/chat/completions, /v1/completions and vLLM's extensions
SAMPLING = (
    "temperature", "top_p", "top_k", "min_p", "n", "stop", "seed", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "logit_bias", "stop_token_ids", "ignore_eos", "min_tokens", "skip_special_tokens",
    "spaces_between_special_tokens", "include_stop_str_in_output", "return_token_ids", "user", "max_tokens",
)
CHAT_KEYS = {"model", "messages", "max_completion_tokens", "logprobs", "top_logprobs", "stream", *SAMPLING}
COMPLETION_KEYS = {"model", "prompt", "add_special_tokens", "logprobs", "stream", *SAMPLING}
NOT_CARRIED = {
    "tools": "tool calls", "tool_choice": "tool calls", "functions": "function calls", "function_call": "function calls",
    "response_format": "response formats", "echo": "echo", "prompt_logprobs": "prompt logprobs", "suffix": "suffix",
    "prompt_embeds": "prompt_embeds of your own", "chat_template": "a chat template per request",
}


class RequestRefused(Exception):
    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param = status, param


def error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    kind = {401: "authentication_error", 404: "not_found_error"}.get(status, "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _check_keys(body: dict[str, Any], allowed: set[str]) -> None:
    for key, what in NOT_CARRIED.items():
        if body.get(key) not in (None, False, [], {"type": "text"}):
            raise RequestRefused(f"{what} ({key}) are not supported when serving a prompt-tuning run", param=key)
    if body.get("stream"):
        raise RequestRefused("stream: true is not supported when serving a prompt-tuning run; ask without streaming", param="stream")
    unknown = sorted(k for k in body if k not in allowed and k not in NOT_CARRIED)
    if unknown:
        raise RequestRefused(f"unsupported parameter(s): {', '.join(unknown)}", param=unknown[0])


def _text_of(content: Any, where: str) -> str:
    """A message's content: a string, or text parts joined by newlines (as vLLM joins them)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "\n".join(str(p.get("text", "")) for p in content)
    raise RequestRefused(f"{where}: only text content is supported", param="messages")


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestRefused("messages must be a non-empty list", param="messages")
    shown = []
    for k, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestRefused(f"messages[{k}] needs a role", param="messages")
        shown.append({**message, "content": _text_of(message.get("content", ""), f"messages[{k}]")})
    return shown


def chat_logprobs(logprobs: dict[str, Any] | None) -> dict[str, Any] | None:
    """/v1/completions' logprobs (tokens, token_logprobs, top_logprobs) in the chat format (content: [...])."""
    if not logprobs:
        return None
    content = []
    tops = logprobs.get("top_logprobs") or [None] * len(logprobs["tokens"])
    for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"], tops, strict=True):
        content.append({
            "token": token, "logprob": logprob, "bytes": list(token.encode("utf-8")),
            "top_logprobs": [{"token": t, "logprob": p, "bytes": list(t.encode("utf-8"))} for t, p in (top or {}).items()],
        })
    return {"content": content}


class Front:
    """The front's state: where vLLM is, how to embed, who may ask."""

    def __init__(self, upstream: str, upstream_key: str, upstream_model: str, served_model: str, key: str | None,
                 tokenizer, chat_template: str | None, payload: Callable[[list[int]], str]) -> None:
        self.upstream, self.upstream_key, self.upstream_model = upstream, upstream_key, upstream_model
        self.served_model, self.key = served_model, key
        self.tokenizer, self.chat_template, self.payload = tokenizer, chat_template, payload
        self.tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe across threads

    def authorized(self, header: str | None) -> bool:
        if self.key is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), f"Bearer {self.key}".encode())

    def _forward(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.upstream + path, data=json.dumps(body).encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.upstream_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=UPSTREAM_TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = text[:1000]
            raise RequestRefused(message, exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RequestRefused(f"the model server did not answer: {exc}", HTTPStatus.BAD_GATEWAY) from exc

    def _check_model(self, body: dict[str, Any]) -> None:
        if body.get("model") != self.served_model:
            raise RequestRefused(f"The model `{body.get('model')}` does not exist; this server serves `{self.served_model}`", HTTPStatus.NOT_FOUND, "model")

    def _complete(self, body: dict[str, Any], ids: list[int], logprobs: int | None) -> dict[str, Any]:
        upstream = {k: body[k] for k in SAMPLING if k in body}
        upstream.update(model=self.upstream_model, prompt_embeds=self.payload(ids))
        if logprobs is not None:
            upstream["logprobs"] = logprobs
        return self._forward("/v1/completions", upstream)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, CHAT_KEYS)
        self._check_model(body)
        messages = chat_messages(body)
        with self.tokenizer_lock:
            ids = prompt_ids(self.tokenizer, render_prompt(self.tokenizer, self.chat_template, messages))
        if "max_completion_tokens" in body:
            body = {**body, "max_tokens": body["max_completion_tokens"]}
        logprobs = (body.get("top_logprobs") or 0) if body.get("logprobs") else None
        reply = self._complete(body, ids, logprobs)
        choices = [
            {
                "index": c["index"],
                "message": {"role": "assistant", "content": c["text"]},
                "logprobs": chat_logprobs(c.get("logprobs")),
                "finish_reason": c.get("finish_reason"),
                "stop_reason": c.get("stop_reason"),
                "token_ids": c.get("token_ids"),
            }
            for c in reply["choices"]
        ]
        return {
            "id": "chatcmpl-" + str(reply.get("id", "")).removeprefix("cmpl-"), "object": "chat.completion",
            "created": reply.get("created", int(time.time())), "model": self.served_model, "choices": choices,
            "usage": reply.get("usage"), "prompt_token_ids": ids if body.get("return_token_ids") else None,
        }

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, COMPLETION_KEYS)
        self._check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str):
            with self.tokenizer_lock:
                ids = self.tokenizer(prompt, add_special_tokens=body.get("add_special_tokens", True) is not False)["input_ids"]
        elif isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
            ids = list(prompt)
        else:
            raise RequestRefused("prompt must be one string or one list of token ids", param="prompt")
        reply = self._complete(body, ids, body.get("logprobs"))
        reply["model"] = self.served_model
        for choice in reply["choices"]:
            choice["prompt_token_ids"] = ids if body.get("return_token_ids") else None
        return reply

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.served_model, "object": "model", "created": int(time.time()), "owned_by": "ftc"}]}

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.upstream + "/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


class _Handler(BaseHTTPRequestHandler):
    front: Front  # set on the subclass make_server builds
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # vLLM logs the requests; the front stays quiet on ftc's terminal

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.front.authorized(self.headers.get("Authorization")):
            return True
        self._send(HTTPStatus.UNAUTHORIZED, error_body("Unauthorized: send the API key as Authorization: Bearer KEY", 401))
        return False

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/health":
            ok = self.front.healthy()
            self._send(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, {} if ok else error_body("the model server is not ready", 503))
        elif path == "/v1/models":
            if self._authorized():
                self._send(HTTPStatus.OK, self.front.models())
        else:
            self._send(HTTPStatus.NOT_FOUND, error_body(f"no route {path}", 404))

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        routes = {"/v1/chat/completions": self.front.chat, "/v1/completions": self.front.completion}
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, error_body(f"the request is over {MAX_BODY} bytes", 413))
            return
        raw = self.rfile.read(length)
        if path not in routes:
            self._send(HTTPStatus.NOT_FOUND, error_body(f"no route {path}", 404))
            return
        if not self._authorized():
            return
        try:
            body = json.loads(raw or b"null")
            if not isinstance(body, dict):
                raise RequestRefused("the request body must be a JSON object")
            self._send(HTTPStatus.OK, routes[path](body))
        except ValueError as exc:  # bad JSON, a token id outside the vocabulary
            self._send(HTTPStatus.BAD_REQUEST, error_body(str(exc), 400))
        except RequestRefused as exc:
            self._send(exc.status, error_body(str(exc), exc.status, exc.param))


class ThreadedServer:
    """An HTTP handler class on host:port, answering in threads beside ftc serve's main thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"daemon_threads": True, "address_family": family})
        self.server = server_class((host, port), handler)
        local = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        self.url = f"http://[{local}]:{port}" if ":" in local else f"http://{local}:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() waits for serve_forever, forever if it never ran
            self.server.shutdown()
        self.server.server_close()


class FrontServer(ThreadedServer):
    """The front on host:port."""

    def __init__(self, front: Front, host: str, port: int) -> None:
        super().__init__(type("Handler", (_Handler,), {"front": front}), host, port)
