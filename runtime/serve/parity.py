"""The parity gate of `ftc serve`: does the server answer as transformers does?

N prompts (the run's held-out examples, a file of your own, or a few built-in ones) go to the server the way
clients send them: chat messages through /v1/chat/completions (a plain string prompt through /v1/completions),
greedy (temperature 0, repetition_penalty 1), one request at a time, asking for the token ids. transformers
answers the same prompts, rendered with the locked chat template and tokenized without special tokens (as
vLLM's chat endpoint does), one at a time (no padding to perturb them), greedily, with the same stop tokens
and the same number of new tokens. A prompt agrees when the prompt tokens and the answer tokens up to the
first stop token are equal: differing prompt tokens mean vLLM renders or tokenizes the conversation
differently (chat template, tokenizer); differing answers mean it computes differently (dtype, kernels,
weights). The first divergence is kept with both continuations, for the report and for people.

Quantized exports (`ftc serve RUN --export w8a8`) cannot agree token for token: vLLM computes them in bfloat16 with
its own int8 and int4 kernels, and a W8A8 model flips about one top-1 token in ten under noise of 1e-7 on its inputs
(runtime/export/compressed.py). For them a divergence in the answer counts as a near tie when vLLM's token is among
transformers' RANKED highest at that position, at most TIE_MARGIN logits below its first: both ran the same weights
and parted where they were nearly undecided. The prompt tokens must still be equal (the template and the tokenizer
are not approximate), and a divergence anywhere else still fails. The record keeps each divergence's rank and gap.
Measured on the quickstart's W8A8 export (16 held-out tickets, vLLM bfloat16 against transformers float32): 6 answers
identical, 10 parting where vLLM took transformers' 2nd to 4th token, 0.14 to 1.01 logits below its 1st (the largest
logit is about 45). This is weaker than token identity, and cannot be otherwise for int8 activations: it still fails
a different template or tokenizer, and a model that parts where transformers was sure.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ftc.runtime.generate import (
    cut_at_stop,
    generate_one,
    generate_with_virtual_tokens,
    prompt_ids,
    render_prompt,
)
from ftc.runtime.heldout import held_out
from ftc.runtime.models import RunFolder
from ftc.runtime.runfolder import Divergence, ParityCheck, RunFolderError

TIE_MARGIN = 1.5  # logits: how close vLLM's token must be to transformers' first for a quantized export's tie
RANKED = 5  # how many of transformers' highest tokens a divergence's record shows
REQUEST_TIMEOUT = 600  # seconds for one request: the first ones on a busy CPU are slow
BUILTIN_PROMPTS = [
    "Hello! Who are you?",
    "Write one sentence about the sea.",
    "What is 12 + 30?",
    "List three colours.",
    "Translate 'good morning' into French.",
    "Summarise: the meeting moved to Tuesday at 10am.",
    "Give me a haiku about autumn.",
    "Explain what an API is in one sentence.",
]


class PromptsUnavailable(Exception):
    """There is no prompt to compare on; the message says what to give instead."""


class ServerRequestFailed(Exception):
    """A request to the server failed (HTTP error, connection, no token ids)."""


@dataclass(frozen=True)
class ParityPrompt:
    source: str  # file:line, or "built-in"
    shown: str  # the last message, for people
    messages: list[dict[str, Any]] | None  # sent to /v1/chat/completions; None: `text` to /v1/completions
    text: str  # the prompt as transformers gets it (rendered with the template, or as it is)
    ids: list[int]
    max_tokens: int


@dataclass(frozen=True)
class Generation:
    prompt_ids: list[int]
    ids: list[int]  # the answer up to (without) the first stop token
    stopped: bool  # False: it ran to max_tokens
    ranked: list[list[tuple[int, float]]] | None = None  # per answer position (stop token included): the RANKED
    # highest tokens and how far each one's logit is below the first's; transformers' side, quantized exports only


def _prompt_value(value: Any, data_format: str) -> list[dict[str, Any]] | str | None:
    """A record's prompt: the conversation before its last assistant turn, or its prompt field."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return value or None  # a list of messages
    if not isinstance(value, dict):
        return None
    if "messages" in value and data_format in ("chat", "any"):
        messages = value["messages"]
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None:
            return messages or None  # a conversation waiting for its answer
        return messages[:last] or None
    if "prompt" in value:
        return value["prompt"] or None
    return None


def parity_prompts(run: RunFolder | None, chat_template: str | None, tokenizer, n: int, prompts_file: Path | None, max_tokens: int, max_model_len: int | None) -> tuple[str, list[ParityPrompt], list[str]]:
    """Up to n prompts (from --prompts, the run's held-out examples, or built-in ones), each with the new tokens it
    may take: max_tokens, less when the context would overflow. Returns (where they came from, prompts, notes)."""
    notes: list[str] = []
    values: list[tuple[str, Any]] = []
    fmt = "any"
    if prompts_file is not None:
        from ftc.compiler.data.read import DataProblem, iter_records

        for item in iter_records(prompts_file, str(prompts_file)):
            if isinstance(item, DataProblem):
                raise PromptsUnavailable(f"--prompts: {item}")
            values.append((f"{prompts_file}:{item.where}", item.value))
        if not values:
            raise PromptsUnavailable(f"--prompts {prompts_file} holds no records")
        origin = str(prompts_file)
    elif run is not None and run.lock.data.format != "text":
        fmt = run.lock.data.format
        try:
            examples = held_out(run, n)
        except RunFolderError as exc:
            raise PromptsUnavailable(f"the run's held-out prompts cannot be read: {exc}; give --prompts FILE") from exc
        values = [(f"{examples.path}:{r.where}", r.value) for r in examples.records]
        origin = f"held-out ({examples.source}: {examples.path})"
    else:
        origin = "built-in prompts (no held-out set: give --prompts FILE for your own)"
    if not values:
        values = [("built-in", [{"role": "user", "content": p}] if chat_template or tokenizer.chat_template else p) for p in BUILTIN_PROMPTS]
    prompts = []
    for source, value in values:
        if len(prompts) == n:
            break
        prompt = _prompt_value(value, fmt)
        if prompt is None:
            notes.append(f"{source}: no prompt to send; skipped")
            continue
        if isinstance(prompt, str):
            messages, text, shown = None, prompt, prompt
        else:
            messages = prompt
            text = render_prompt(tokenizer, chat_template, messages)
            shown = str(messages[-1].get("content", ""))
        ids = prompt_ids(tokenizer, text)
        room = max_tokens if max_model_len is None else min(max_tokens, max_model_len - len(ids))
        if room < 1:
            notes.append(f"{source}: the prompt's {len(ids)} tokens fill max_model_len {max_model_len}; skipped")
            continue
        prompts.append(ParityPrompt(source, shown, messages, text, ids, room))
    if not prompts:
        raise PromptsUnavailable(f"no prompt to check parity with ({origin}); give --prompts FILE, or --parity 0 to skip the check")
    return origin, prompts, notes


def reference_answers(model, prompts: list[ParityPrompt], stop_ids: list[int], pad_id: int | None, done: Callable[[int], None] = lambda k: None, use_cache: bool = True, ties: bool = False) -> list[Generation]:
    """transformers' greedy answers, one prompt at a time (no padding to perturb them); with `ties` (quantized
    exports), the RANKED highest tokens at each position too."""
    answers = []
    generate = generate_one if use_cache else generate_with_virtual_tokens  # without the cache: runtime/generate.py says why
    for prompt in prompts:
        if ties:
            answers.append(_with_ranking(model, prompt, stop_ids, pad_id))
        else:
            answer, stopped = generate(model, prompt.ids, stop_ids, pad_id, prompt.max_tokens)
            answers.append(Generation(prompt.ids, answer, stopped))
        done(len(answers))
    return answers


def _with_ranking(model, prompt: ParityPrompt, stop_ids: list[int], pad_id: int | None) -> Generation:
    """generate_one's greedy answer, with the RANKED highest tokens and their gaps at every step (raw logits)."""
    import torch

    from ftc.runtime.generate import greedy_config

    device = next(model.parameters()).device
    input_ids = torch.tensor([prompt.ids], device=device)
    config = greedy_config(stop_ids, pad_id, prompt.max_tokens)
    config.output_logits = config.return_dict_in_generate = True
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
    answer, stopped = cut_at_stop(out.sequences[0, len(prompt.ids) :].tolist(), stop_ids)
    ranked = []
    for logits in out.logits:
        top = torch.topk(logits[0].float(), RANKED)
        ranked.append([(int(i), float(top.values[0] - v)) for i, v in zip(top.indices, top.values, strict=True)])
    return Generation(prompt.ids, answer, stopped, ranked)


def _post(url: str, body: dict[str, Any], key: str | None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ServerRequestFailed(f"vLLM answered the parity request with HTTP {exc.code}: {exc.read()[:500].decode('utf-8', 'replace')}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ServerRequestFailed(f"the parity request to {url} failed: {exc}") from exc


def server_answers(base_url: str, model: str, key: str | None, prompts: list[ParityPrompt], stop_ids: list[int], done: Callable[[int], None] = lambda k: None) -> list[Generation]:
    """vLLM's greedy answers as a client gets them: chat messages through /v1/chat/completions (a string prompt
    through /v1/completions), one request at a time, with the token ids."""
    answers = []
    for prompt in prompts:
        body: dict[str, Any] = {"model": model, "temperature": 0, "repetition_penalty": 1.0, "max_tokens": prompt.max_tokens, "return_token_ids": True}
        if prompt.messages is not None:
            reply = _post(f"{base_url}/v1/chat/completions", {**body, "messages": prompt.messages}, key)
            prompt_ids, ids = reply.get("prompt_token_ids"), reply["choices"][0].get("token_ids")
        else:
            reply = _post(f"{base_url}/v1/completions", {**body, "prompt": prompt.text, "add_special_tokens": False}, key)
            choice = reply["choices"][0]
            prompt_ids, ids = choice.get("prompt_token_ids"), choice.get("token_ids")
        if ids is None:
            raise ServerRequestFailed("vLLM returned no token ids (return_token_ids); this vLLM is too old for the parity gate")
        answer, stopped = cut_at_stop(list(ids), stop_ids)
        answers.append(Generation(list(prompt_ids or []), answer, stopped))
        done(len(answers))
    return answers


def _first_difference(a: list[int], b: list[int]) -> int | None:
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


def _continuation(tokenizer, ids: list[int], at: int, stopped: bool) -> str:
    shown = tokenizer.decode(ids[at : at + 24])
    if at + 24 >= len(ids):
        shown += " <stop token>" if stopped else " <max tokens>"
    return shown


def _ranking(ref: Generation, got: Generation, at: int, stop_ids: list[int]) -> dict[str, Any] | None:
    """Where vLLM's token at answer position `at` stands in transformers' ranking there: its rank (None: below the
    RANKED shown) and its logit gap to the first, with the ranking itself."""
    if ref.ranked is None or at >= len(ref.ranked):
        return None
    ranked = ref.ranked[at]
    if at < len(got.ids):
        rank = next((k for k, (token, _) in enumerate(ranked) if token == got.ids[at]), None)
    else:  # vLLM stopped there: its token was a stop token
        rank = next((k for k, (token, _) in enumerate(ranked) if token in stop_ids), None) if got.stopped else None
    return {"rank": None if rank is None else rank + 1, "gap": None if rank is None else round(ranked[rank][1], 4),
            "transformers_ranked": [[token, round(gap, 4)] for token, gap in ranked]}


def compare(prompts: list[ParityPrompt], reference: list[Generation], served: list[Generation], tokenizer, stop_ids: list[int] | None = None, tie_margin: float | None = None) -> list[dict[str, Any]]:
    """Per prompt: agree or not, where the two first part, and (with tie_margin) whether that was a near tie."""
    rows = []
    for prompt, ref, got in zip(prompts, reference, served, strict=True):
        row: dict[str, Any] = {"source": prompt.source, "prompt": prompt.shown[:300], "max_tokens": prompt.max_tokens, "tokens": len(ref.ids)}
        where = "prompt"
        at = _first_difference(ref.prompt_ids, got.prompt_ids) if got.prompt_ids else None
        if at is None:
            where = "answer"
            at = _first_difference(ref.ids, got.ids)
            if at is None and ref.stopped != got.stopped:
                at = len(ref.ids)
        row["agree"] = at is None
        if at is not None and where == "answer" and tie_margin is not None:
            ranking = _ranking(ref, got, at, stop_ids or [])
            if ranking is not None:
                row["ranking"] = ranking
                if ranking["rank"] is not None and ranking["gap"] <= tie_margin:
                    row["near_tie"] = {"position": at, "gap": ranking["gap"]}
        if at is not None:
            a, b = (ref.prompt_ids, got.prompt_ids) if where == "prompt" else (ref.ids, got.ids)
            row["divergence"] = {
                "in": where,
                "position": at,
                "transformers": _continuation(tokenizer, a, at, where == "answer" and ref.stopped),
                "vllm": _continuation(tokenizer, b, at, where == "answer" and got.stopped),
                "transformers_ids": a[at : at + 8],
                "vllm_ids": b[at : at + 8],
            }
        rows.append(row)
    return rows


def parity_record(rows: list[dict[str, Any]], required: float, tie_margin: float | None = None, **facts: Any) -> ParityCheck:
    agreeing = sum(r["agree"] for r in rows)
    ties = sum("near_tie" in r for r in rows)
    rate = (agreeing + ties) / len(rows)
    first = next((r for r in rows if not r["agree"]), None)
    return ParityCheck(
        status="passed" if rate >= required else "failed",
        prompts=len(rows),
        agreeing=agreeing,
        agreement=rate,
        required=required,
        **({"near_ties": ties, "tie_margin": tie_margin} if tie_margin is not None else {}),
        first_divergence=None if first is None else Divergence.model_validate({"source": first["source"], "prompt": first["prompt"], **first["divergence"]}),
        **facts,
        checked=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        results=rows,
    )


def describe_parity(record: ParityCheck) -> list[str]:
    """The gate's result for people: the rate, and the first divergence when there is one."""
    need = "all" if record.required >= 1 else f"at least {record.required:.0%}"
    verdict = "passed" if record.status == "passed" else "FAILED"
    ties = f", {record.near_ties} more part at a near tie (within {record.tie_margin:g} logits of transformers' first)" if record.tie_margin is not None else ""
    lines = [
        f"parity {verdict}: {record.agreeing}/{record.prompts} prompts agree token for token{ties} ({record.agreement:.0%}; "
        f"required: {need}): vLLM ({record.served_dtype}, {record.endpoint}) versus transformers ({record.reference_dtype}), "
        f"greedy, up to {record.max_new_tokens} new tokens, {record.examples_from}"
    ]
    d = record.first_divergence
    if d is not None:
        lines += [
            f"first divergence: {d.source} ({(d.prompt or '')[:80]!r}), {d.where} token {d.position}:",
            f"  transformers: {d.transformers!r}  ids {list(d.transformers_ids or ())}",
            f"  vLLM:         {d.vllm!r}  ids {list(d.vllm_ids or ())}",
        ]
        if d.where == "prompt":
            lines.append("  the prompt tokens differ: vLLM renders or tokenizes the conversation differently (chat template, tokenizer)")
    return lines
