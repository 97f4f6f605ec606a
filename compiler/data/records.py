"""What makes one example well formed, format by format. Each problem is a reason and a hint; data.survey
puts the file and line in front. The rules:

chat        {"messages": [...]}: an optional system turn first, then user and assistant alternating,
            starting with user and ending with assistant (the turn that is trained). Every turn has a
            role and non-empty string content; `weight` (0 or 1, assistant turns only) leaves a turn
            untrained when 0, and at least one assistant turn must keep weight 1.
completion  {"prompt", "completion"}: strings, or message lists (the prompt ends with a user turn; the
            completion is assistant turns).
preference  {"prompt", "chosen", "rejected"}: the same, and chosen must differ from rejected.
text        {"text"}: a non-empty string.
No other fields are allowed (but a label field the spec names): a misspelled field would otherwise be
ignored without a word.
"""

from __future__ import annotations

import difflib
from typing import Any

Problem = tuple[str, "str | None"]

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "weight")
# Roles other tools and datasets use, and what they are called here.
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant"}
FIELDS = {
    "chat": ("messages",),
    "completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "text": ("text",),
}


def record_problems(value: dict[str, Any], fmt: str, extra_fields: tuple[str, ...] = ()) -> list[Problem]:
    """Every problem of one record of format `fmt` (whose required fields are known to be present).
    `extra_fields` are allowed besides the format's own (the spec's data.label_field)."""
    allowed = FIELDS[fmt] + extra_fields
    problems = _unknown_fields(value, allowed, "field", "a record has only " + ", ".join(allowed))
    if fmt == "chat":
        problems += conversation_problems(value["messages"], "messages")
    elif fmt == "text":
        problems += _text_problems(value["text"], "text")
    else:
        problems += _prompt_problems(value["prompt"])
        answers = ("completion",) if fmt == "completion" else ("chosen", "rejected")
        for key in answers:
            problems += _answer_problems(value[key], key)
        if fmt == "preference" and value["chosen"] == value["rejected"] and value["chosen"] not in ("", []):
            problems.append(("chosen and rejected are identical: the pair teaches no preference", "make rejected the worse answer, or drop the pair"))
    return problems


def _unknown_fields(value: dict[str, Any], allowed: tuple[str, ...], what: str, hint: str) -> list[Problem]:
    problems = []
    for key in sorted(set(value) - set(allowed)):
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        problems.append((f"unknown {what} {key!r}", f"did you mean {close[0]!r}?" if close else hint))
    return problems


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeio" else f"a {word}"  # "a user"


def _kind(value: Any) -> str:
    """A JSON value's type, in JSON's words."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _text_problems(text: Any, where: str) -> list[Problem]:
    if text is None:
        return [(f"{where} is null", "give a string")]
    if not isinstance(text, str):
        return [(f"{where} is {_a(_kind(text))}, not a string", "give a string")]
    if not text.strip():
        return [(f"{where} is empty", "give some text, or remove the record")]
    return []


def _message_problems(message: Any, where: str) -> list[Problem]:
    if not isinstance(message, dict):
        return [(f"{where} is {_a(_kind(message))}, not an object", 'write {"role": ..., "content": ...}')]
    problems = _unknown_fields(message, MESSAGE_KEYS, f"field in {where}", "a message has role, content and an optional weight")
    role = message.get("role")
    if "role" not in message:
        problems.append((f"{where} has no role", "give role = system, user or assistant"))
    elif role not in ROLES:
        alias = ROLE_ALIASES.get(str(role).lower()) or next(iter(difflib.get_close_matches(str(role), ROLES, n=1, cutoff=0.6)), None)
        problems.append((f"{where} has unknown role {role!r}", f"did you mean {alias!r}?" if alias else "roles are system, user and assistant"))
    if "content" not in message:
        problems.append((f"{where} has no content", "give the turn's text as content"))
    else:
        problems += _text_problems(message["content"], f"{where} content")
    if "weight" in message:
        weight = message["weight"]
        if isinstance(weight, bool) or weight not in (0, 1):
            problems.append((f"{where} weight is {weight!r}", "weight is 0 (not trained) or 1 (trained)"))
        elif role != "assistant":
            problems.append((f"{where} has a weight, but only assistant turns are trained", "remove the weight"))
    return problems


def _messages(value: Any, where: str) -> tuple[list[Problem], list[dict[str, Any]] | None]:
    """The problems of a message list, and the list when its every message is well formed."""
    if not isinstance(value, list):
        return [(f"{where} is {_a(_kind(value))}, not a list of messages", 'write [{"role": "user", "content": ...}, ...]')], None
    if not value:
        return [(f"{where} is empty", "give at least a user turn and an assistant turn")], None
    problems = []
    for i, message in enumerate(value, 1):
        problems += _message_problems(message, f"turn {i}")
    return problems, None if problems else value


def conversation_problems(value: Any, where: str) -> list[Problem]:
    problems, messages = _messages(value, where)
    if messages is None:
        return problems
    roles = [m["role"] for m in messages]
    for i, role in enumerate(roles[1:], 2):
        if role == "system":
            problems.append((f"turn {i} is a system turn: a system turn may only come first", "merge it into the first turn, or make it a user turn"))
    turns = [(i, r) for i, r in enumerate(roles, 1) if r != "system"]
    if not turns:
        return problems + [(f"{where} has only a system turn", "add a user turn and an assistant answer")]
    if turns[0][1] != "user":
        problems.append((f"the conversation starts with {_a(turns[0][1])} turn (turn {turns[0][0]})", "begin with a user turn (after an optional system turn)"))
    for (_, previous), (i, role) in zip(turns, turns[1:]):
        if role == previous:
            problems.append((f"turn {i} is a second {role} turn in a row", "user and assistant turns must alternate; merge the two"))
    if turns[-1][1] != "assistant":
        problems.append((f"the last turn is {_a(turns[-1][1])} turn", "supervised training needs an assistant answer last; remove the trailing turn or answer it"))
    answered = [m for m in messages if m["role"] == "assistant"]
    if answered and all(m.get("weight", 1) == 0 for m in answered):
        problems.append(("every assistant turn has weight 0: nothing in this example is trained", "give at least one assistant turn weight 1, or drop the example"))
    return problems


def _prompt_problems(value: Any) -> list[Problem]:
    if not isinstance(value, list):
        return _text_problems(value, "prompt")
    problems, messages = _messages(value, "prompt")
    if messages is not None and messages[-1]["role"] != "user":
        problems.append((f"the prompt ends with {_a(messages[-1]['role'])} turn", "a prompt ends with the user turn that the answer replies to"))
    return problems


def _answer_problems(value: Any, key: str) -> list[Problem]:
    if not isinstance(value, list):
        return _text_problems(value, key)
    problems, messages = _messages(value, key)
    if messages is not None:
        for i, message in enumerate(messages, 1):
            if message["role"] != "assistant":
                problems.append((f"{key} turn {i} is {_a(message['role'])} turn", f"{key} holds the assistant's answer only"))
    return problems
