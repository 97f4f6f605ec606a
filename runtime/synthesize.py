"""`ftc data synthesize`: new training examples from a teacher model behind any OpenAI-compatible endpoint.

Each request shows the teacher K seed examples drawn from the spec's train split (by --seed, recorded) through a
prompt template, and asks for new examples as a JSON array of records in the spec's format. The template is jinja2,
rendered in a SandboxedEnvironment with StrictUndefined: the seed examples are its data (as JSON text), never code.
The teacher's answer is data too: it is parsed as JSON, never run.

Every generated example must pass, in order: the spec's record and token checks (runtime/specdata.py); the
json_schema metric's schema and the label field, where the spec has them (the answer parses as JSON, validates,
and carries a label that train uses); no prompt the held-out split asks, exactly or nearly (character trigram
Jaccard similarity of the user turns, case-folded, at least NEAR_DUPLICATE); no repeat of train or of an earlier
generated example. Whatever fails is dropped and listed with its reason in the sidecar FILE.meta.json.

A teacher that does not answer (refused connection, timeout, HTTP error, an answer not in OpenAI's shape) stops
the whole run, and nothing is written. The API key is read from the named environment variable, sent in the
Authorization header, and written nowhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ftc.runtime.specdata import Checker, SpecData, answer_problems, prompt_key, prompt_text, record_digest

META_SUFFIX = ".meta.json"  # the sidecar: FILE + this
META_FORMAT = 1
NEAR_DUPLICATE = 0.8  # character-trigram Jaccard similarity of prompts at or above which a held-out one is near
SHINGLE = 3
PER_REQUEST = 5  # examples asked for in one request
ATTEMPTS = 3  # requests made at most, as a multiple of those that would do if every example were kept
TIMEOUT_S = 120.0

DEFAULT_TEMPLATE = """\
You write new training examples for a model. Each example is one JSON object in the same format as these \
{{ examples | length }} examples ({{ format }} records):

{% for example in examples %}{{ example }}
{% endfor %}
Write {{ n }} new examples like them: the same fields, the same kind of task and answer{% if label_field %}, and \
a {{ label_field }} from the ones above ({{ labels | join(", ") }}){% endif %}, but new questions, not copies or \
rewordings of these. Answer with a JSON array of {{ n }} objects and nothing else.
"""


class TeacherError(Exception):
    """The teacher did not answer; the message names the URL and the reason."""


@dataclass
class Settings:
    url: str
    model: str | None
    n: int
    seeds: int = 3
    temperature: float = 1.0
    max_tokens: int = 2048
    seed: int = 0
    template: str = DEFAULT_TEMPLATE
    template_name: str = "built-in"
    per_request: int = PER_REQUEST
    near_duplicate: float = NEAR_DUPLICATE
    api_key: str | None = field(default=None, repr=False)  # never written


@dataclass
class Synthesis:
    examples: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # per request: its seed examples' lines, counts
    model: str | None = None

    def meta(self, s: Settings, data: SpecData) -> dict[str, Any]:
        seeds = sorted({line for r in self.requests for line in r["seed_lines"]})
        by_line = {r.line: r.value for r in data.train_examples}
        reasons = Counter(d["reason"].split(":")[0] for d in self.dropped)
        return {
            "format_version": META_FORMAT,
            "teacher": {"url": s.url, "model": self.model},
            "settings": {
                "n": s.n, "seeds_per_request": s.seeds, "per_request": s.per_request, "temperature": s.temperature,
                "max_tokens": s.max_tokens, "seed": s.seed, "near_duplicate": s.near_duplicate, "shingle": SHINGLE,
                "template": s.template_name, "template_sha256": hashlib.sha256(s.template.encode()).hexdigest(),
            },
            "spec": data.sha256(),
            "seed_examples": [{"line": line, "record": by_line[line]} for line in seeds],
            "requests": self.requests,
            "counts": {"kept": len(self.examples), "dropped": len(self.dropped), "dropped_by_reason": dict(sorted(reasons.items())), "asked": s.n},
            "dropped": self.dropped,
        }


def render_template(template: str, **context: Any) -> str:
    """The prompt, rendered in jinja2's sandbox: the template may only read the data it is given."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    return env.from_string(template).render(**context)


def chat_url(url: str) -> str:
    base = url.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


def _headers(s: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}


def teacher_model(client, s: Settings) -> str:
    """--model, or the one model the endpoint serves."""
    if s.model:
        return s.model
    url = chat_url(s.url).removesuffix("/chat/completions") + "/models"
    body = _call(client, "GET", url, s)
    names = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)] if isinstance(body.get("data"), list) else None
    if not names or len(names) != 1 or not isinstance(names[0], str):
        raise TeacherError(f"{s.url}: give --model; the endpoint serves {', '.join(map(str, names or [])) or 'no model it lists'}")
    return names[0]


def _call(client, method: str, url: str, s: Settings, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    import httpx

    try:
        response = client.request(method, url, json=payload, headers=_headers(s))
    except httpx.TimeoutException as exc:
        raise TeacherError(f"{url}: no answer within {TIMEOUT_S:.0f}s ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise TeacherError(f"{url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code >= 400:
        raise TeacherError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    try:
        body = response.json()
    except ValueError as exc:
        raise TeacherError(f"{url}: the answer is not JSON ({response.text[:100]!r})") from exc
    if not isinstance(body, dict):
        raise TeacherError(f"{url}: the answer is not a JSON object, as OpenAI's API answers")
    return body


def ask(client, s: Settings, model: str, prompt: str, seed: int) -> str:
    url = chat_url(s.url)
    payload = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": s.temperature, "max_tokens": s.max_tokens, "seed": seed}
    body = _call(client, "POST", url, s, payload)
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise TeacherError(f"{url}: not an OpenAI chat completion (no choices[0].message.content)") from exc
    if not isinstance(content, str):
        raise TeacherError(f"{url}: not an OpenAI chat completion (choices[0].message.content is not text)")
    return content


_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n```\s*$", re.DOTALL)


def parse_answer(content: str) -> tuple[list[Any], str | None]:
    """The records of a teacher's answer: a JSON array, one object, or one object a line; a code fence is allowed."""
    text = content.strip()
    fenced = _FENCE.match(text)
    text = fenced.group(1).strip() if fenced else text
    if not text:
        return [], "the answer is empty"
    try:
        value = json.loads(text)
    except ValueError:
        items = []
        for line in text.splitlines():
            if line.strip():
                try:
                    items.append(json.loads(line))
                except ValueError:
                    return [], "the answer is not JSON (an array of examples, or one a line)"
        return items, None
    if isinstance(value, dict):
        return [value], None
    if isinstance(value, list):
        return value, None
    return [], f"the answer is a JSON {type(value).__name__}, not an array of examples"


def shingles(text: str) -> set[str]:
    return {text[i : i + SHINGLE] for i in range(max(1, len(text) - SHINGLE + 1))} if text else set()


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def synthesize(s: Settings, data: SpecData, checker: Checker | None, tick: Callable[[], None] | None = None) -> Synthesis:
    """Ask the teacher until N examples are kept or the attempts run out; raises TeacherError."""
    import httpx

    if not data.train_examples:
        raise TeacherError(f"{s.url}: not asked: the spec's train split has no example to show the teacher")
    result = Synthesis()
    rng = random.Random(s.seed)
    validator = _validator(data)
    held = [(shingles(text), where) for text, where in data.held_out_texts]
    seen: dict[bytes, int] = {}
    budget = ATTEMPTS * math.ceil(s.n / s.per_request)
    with httpx.Client(timeout=TIMEOUT_S) as client:
        model = result.model = teacher_model(client, s)
        while len(result.examples) < s.n and len(result.requests) < budget:
            number = len(result.requests) + 1
            seeds = rng.sample(data.train_examples, min(s.seeds, len(data.train_examples)))
            want = min(s.per_request, s.n - len(result.examples))
            prompt = render_template(
                s.template, examples=[json.dumps(r.value, ensure_ascii=False, sort_keys=True) for r in seeds], records=[r.value for r in seeds],
                n=want, format=data.format, label_field=data.spec.data.label_field, labels=sorted(data.labels),
            )
            request_seed = rng.randrange(2**31)  # the teacher's sampling seed for this request
            answer = ask(client, s, model, prompt, request_seed)
            items, why = parse_answer(answer)
            request = {"request": number, "seed": request_seed, "seed_lines": [r.line for r in seeds], "asked": want, "answer_chars": len(answer), "parsed": len(items), "kept": 0}
            result.requests.append(request)
            if why:
                result.dropped.append({"request": number, "item": None, "reason": f"unparsed answer: {why}"})
            request["kept"] = _judge(result, items, number, data, checker, validator, held, seen, s)
            if tick:
                tick()
    return result


def _validator(data: SpecData):
    from ftc.runtime.specdata import schema_validator

    return schema_validator(data)


def _judge(result: Synthesis, items: list[Any], number: int, data: SpecData, checker: Checker | None, validator, held, seen, s: Settings) -> int:
    """Keep the items that pass every check; list the others. Returns how many were kept."""
    dicts = [item if isinstance(item, dict) else None for item in items]
    values = [d for d in dicts if d is not None]
    problems, _ = checker.problems(values) if checker else ([[] for _ in values], set())
    checked = iter(problems)
    kept = 0
    for i, item in enumerate(items, 1):
        where = {"request": number, "item": i}
        if not isinstance(item, dict):
            result.dropped.append({**where, "reason": "not a record: an example is a JSON object", "value": item})
            continue
        found = next(checked)
        reason = None
        if found:
            reason = "failed the spec's checks: " + "; ".join(found)
        elif bad := answer_problems(data, item, validator):
            reason = "failed the answer checks: " + "; ".join(bad)
        elif prompt_key(item) in data.held_out:
            reason = f"held-out prompt: the spec evaluates on it ({data.held_out[prompt_key(item)]})"
        elif near := _near(item, held, s.near_duplicate):
            reason = f"near a held-out prompt: similarity {near[0]:.2f} with {near[1]} (at least {s.near_duplicate:g})"
        elif record_digest(item) in data.train_seen:
            reason = f"duplicate: repeats train line {data.train_seen[record_digest(item)]}"
        elif record_digest(item) in seen:
            reason = f"duplicate: repeats generated example #{seen[record_digest(item)]}"
        if reason is None and len(result.examples) >= s.n:
            reason = f"surplus: the {s.n} examples asked for (--n) are already kept"
        if reason:
            result.dropped.append({**where, "reason": reason, "value": item})
            continue
        result.examples.append(item)
        seen[record_digest(item)] = len(result.examples)
        kept += 1
    return kept


def _near(item: dict[str, Any], held, threshold: float) -> tuple[float, str] | None:
    grams = shingles(prompt_text(item))
    best = max(((jaccard(grams, g), where) for g, where in held), default=None)
    return best if best is not None and best[0] >= threshold else None


def api_key(var: str | None) -> str | None:
    """The key from the named environment variable (None: no key)."""
    return os.environ.get(var) if var else None
