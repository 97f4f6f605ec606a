"""ftc's OpenAI-compatible front for prompt-embeds serving, without vLLM: the key, the refusals (answered before
anything reaches vLLM), the models list, the health of an absent vLLM, and the reshaping of logprobs. The
answers themselves go through the real vLLM in test_serve_prompt.py."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from ftc.runtime.serve.front import Front, FrontServer, RequestRefused, chat_logprobs, chat_messages


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def front():
    """The front on a free port, before a vLLM port nothing listens on."""
    state = Front(f"http://127.0.0.1:{_port()}", "inner", "tiny", "tiny", "outer-key", tokenizer=None, chat_template=None, payload=lambda ids: "")
    server = FrontServer(state, "127.0.0.1", _port())
    server.start()
    yield server
    server.stop()


def _call(server: FrontServer, path: str, body=None, key: str | None = "outer-key") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(server.url + path, data=data, headers=headers, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]}


def test_the_key_is_checked_first(front):
    for key in (None, "wrong", "outer-key "):
        status, body = _call(front, "/v1/chat/completions", CHAT, key)
        assert status == 401 and body["error"]["type"] == "authentication_error"
    assert _call(front, "/v1/models", key="wrong")[0] == 401
    status, body = _call(front, "/v1/models")
    assert status == 200 and body["object"] == "list" and [m["id"] for m in body["data"]] == ["tiny"]


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"stream": True}, 400, "stream: true is not supported"),
        ({"tools": [{"type": "function"}]}, 400, "tool calls (tools) are not supported"),
        ({"response_format": {"type": "json_object"}}, 400, "response formats"),
        ({"frobnicate": 1}, 400, "unsupported parameter(s): frobnicate"),
        ({"model": "other"}, 404, "The model `other` does not exist; this server serves `tiny`"),
        ({"messages": []}, 400, "messages must be a non-empty list"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "only text content"),
    ],
)
def test_what_the_front_does_not_carry_is_refused_in_openai_s_shape(front, change, status, message):
    got, body = _call(front, "/v1/chat/completions", {**CHAT, **change})
    assert got == status and message in body["error"]["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_bad_bodies_and_routes(front):
    assert _call(front, "/v1/chat/completions", b"{not json")[0] == 400
    assert _call(front, "/v1/chat/completions", b"[1, 2]")[1]["error"]["message"] == "the request body must be a JSON object"
    assert _call(front, "/v1/embeddings", {"model": "tiny"})[0] == 404
    status, body = _call(front, "/v1/completions", {"model": "tiny", "prompt": ["a", "b"]})
    assert status == 400 and "one string or one list of token ids" in body["error"]["message"]
    assert _call(front, "/v1/completions", {"model": "tiny", "prompt": "x", "echo": True})[0] == 400


def test_health_and_an_absent_model_server(front):
    assert _call(front, "/health", key=None)[0] == 503
    status, body = _call(front, "/v1/completions", {"model": "tiny", "prompt": [1, 2, 3]})
    assert status == 502 and "the model server did not answer" in body["error"]["message"]


def test_text_parts_are_joined_and_logprobs_reshaped():
    messages = chat_messages({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert messages == [{"role": "user", "content": "a\nb"}]
    with pytest.raises(RequestRefused, match="needs a role"):
        chat_messages({"messages": [{"content": "x"}]})
    reshaped = chat_logprobs({"tokens": ["é", "b"], "token_logprobs": [-0.5, -1.0], "top_logprobs": [{"é": -0.5, "x": -2.0}, {"b": -1.0}], "text_offset": [0, 1]})
    first = reshaped["content"][0]
    assert first == {"token": "é", "logprob": -0.5, "bytes": [195, 169], "top_logprobs": [
        {"token": "é", "logprob": -0.5, "bytes": [195, 169]}, {"token": "x", "logprob": -2.0, "bytes": [120]}]}
    assert chat_logprobs(None) is None
