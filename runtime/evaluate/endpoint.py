"""`ftc eval RUN --endpoint URL`: the tuned side's answers come from a served OpenAI-compatible endpoint (what
`ftc serve` starts), so that what is scored is what clients get.

Each held-out prompt goes as a client sends it: chat messages to /v1/chat/completions, where the server applies
its own chat template (a string prompt, for completion data with a plain prompt, to /v1/completions). Decoding
is ftc's: temperature 0, max_tokens = evaluation.max_new_tokens, and the locked stop token ids (vLLM's
stop_token_ids). With vLLM's return_token_ids the answer is cut at the first stop id and decoded here exactly as
the local answers are, and the prompt ids the server rendered are compared with the ones ftc renders with the
locked template: a served chat template that differs from the trained one shows up as a prompt mismatch.

The API key is read from the environment variable the caller names (serve.api_key_env by default); it is sent
as a bearer token and written nowhere. A URL's user:password part is dropped from what eval.json records.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ftc.runtime.generate import Answer, Prompt, cut_at_stop, prompt_ids

TIMEOUT = 600  # seconds per request: a CPU server answers a long prompt slowly
CONCURRENCY = 8  # requests in flight: vLLM batches them


class EndpointError(Exception):
    """The endpoint cannot be used: unreachable, refused the key, does not serve the model, or failed a request."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # scheme://host:port[/prefix], without /v1
    model: str  # the served model name requests ask for
    key: str | None
    key_env: str | None
    served: dict[str, Any]  # the server's /v1/models entry for the model

    @property
    def shown(self) -> str:
        """The URL as records show it: without a user:password part."""
        parts = urllib.parse.urlsplit(self.base_url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _request(url: str, key: str | None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:400].decode("utf-8", "replace")
        if exc.code == 401:
            raise EndpointError(f"{url} refused the API key (HTTP 401): set the variable --api-key-env names to the server's key") from exc
        raise EndpointError(f"{url} answered HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise EndpointError(f"{url} cannot be reached: {exc}; is the server up (`ftc serve RUN`)?") from exc


def open_endpoint(url: str, model: str | None, key_env: str | None, default_model: str | None) -> Endpoint:
    """Check the endpoint before any work: it answers /v1/models with this key and serves the model."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"--endpoint {url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000/v1")
    base = url.rstrip("/")
    base = base[: -len("/v1")] if base.endswith("/v1") else base
    key = None
    if key_env:
        key = os.environ.get(key_env) or None
        if key is None:
            raise EndpointError(f"${key_env} is not set (or empty): export the server's API key in it, or name another variable with --api-key-env")
    listed = _request(f"{base}/v1/models", key).get("data") or []
    names = [entry.get("id") for entry in listed]
    wanted = model or (default_model if default_model in names else None) or (names[0] if len(names) == 1 else None)
    if wanted is None or wanted not in names:
        asked = f"model {wanted!r}" if wanted else "a model name"
        raise EndpointError(f"{base}/v1/models lists {names}, not {asked}; name the served model with --endpoint-model")
    return Endpoint(base, wanted, key, key_env, next(e for e in listed if e.get("id") == wanted))


@dataclass(frozen=True)
class Served:
    """The endpoint's answers, and how its rendering of the prompts compares with ftc's."""

    answers: list[Answer]
    prompt_ids_match: int  # answers whose prompt token ids equal ftc's rendering; -1: the server returned none
    first_mismatch: dict[str, Any] | None
    capped: int  # requests that asked for fewer than max_new_tokens, to stay within the server's max_model_len


def room(endpoint: Endpoint, prompt_tokens: int, max_new_tokens: int) -> int:
    """New tokens a request may ask for: max_new_tokens, less when the server's max_model_len would overflow
    (vLLM refuses such a request outright, where transformers would generate past it)."""
    limit = endpoint.served.get("max_model_len")
    return max_new_tokens if not limit else max(0, min(max_new_tokens, limit - prompt_tokens))


def _ask(endpoint: Endpoint, prompt: Prompt, stop_ids: Sequence[int], max_new_tokens: int, tokenizer) -> tuple[Answer, list[int] | None]:
    budget = room(endpoint, len(prompt_ids(tokenizer, prompt.text)), max_new_tokens)
    if budget < 1:
        raise EndpointError(
            f"the prompt {prompt.shown[:60]!r} fills the server's max_model_len ({endpoint.served.get('max_model_len')}) "
            "on its own: serve with a longer --max-model-len"
        )
    body: dict[str, Any] = {
        "model": endpoint.model,
        "temperature": 0,
        "max_tokens": budget,
        "stop_token_ids": list(stop_ids),  # vLLM's extension: the same stops as the local answers
        "return_token_ids": True,  # vLLM's extension: the ids, to cut and decode as the local answers are
    }
    if prompt.messages is not None:
        reply = _request(f"{endpoint.base_url}/v1/chat/completions", endpoint.key, {**body, "messages": prompt.messages})
        choice = reply["choices"][0]
        text, served_ids = choice["message"].get("content") or "", reply.get("prompt_token_ids")
    else:
        reply = _request(f"{endpoint.base_url}/v1/completions", endpoint.key, {**body, "prompt": prompt.text, "add_special_tokens": False})
        choice = reply["choices"][0]
        text, served_ids = choice.get("text") or "", choice.get("prompt_token_ids")
    ids = choice.get("token_ids")
    if ids is not None:
        kept, cut = cut_at_stop(list(ids), list(stop_ids))
        return Answer(tokenizer.decode(kept, skip_special_tokens=True), len(kept), cut), served_ids
    # an endpoint without token ids: its text, measured with the run's tokenizer
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return Answer(text, tokens, choice.get("finish_reason") == "stop"), served_ids


def endpoint_answers(
    endpoint: Endpoint,
    prompts: Sequence[Prompt],
    tokenizer,
    stop_ids: Sequence[int],
    max_new_tokens: int,
    done: Callable[[int], None] = lambda n: None,
) -> Served:
    """Greedy answers from the endpoint, CONCURRENCY requests at a time, in the prompts' order."""
    results: list[tuple[Answer, list[int] | None]] = []
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        for result in pool.map(lambda p: _ask(endpoint, p, stop_ids, max_new_tokens, tokenizer), prompts):
            results.append(result)
            done(len(results))
    matches, first, capped = 0, None, 0
    returned = [ids for _, ids in results if ids is not None]
    for prompt, (_, ids) in zip(prompts, results, strict=True):
        if ids is None:
            continue
        ours = prompt_ids(tokenizer, prompt.text)
        capped += room(endpoint, len(ours), max_new_tokens) < max_new_tokens
        if list(ids) == ours:
            matches += 1
        elif first is None:
            at = next((k for k, (a, b) in enumerate(zip(ours, ids)) if a != b), min(len(ours), len(ids)))
            first = {
                "prompt": prompt.shown[:200],
                "at_token": at,
                "ftc": tokenizer.decode(ours[max(0, at - 8) : at + 8]),
                "served": tokenizer.decode(list(ids)[max(0, at - 8) : at + 8]),
            }
    return Served([a for a, _ in results], matches if returned else -1, first, capped)
