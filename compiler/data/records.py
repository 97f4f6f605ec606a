"""What makes one example well formed, format by format. Each problem is a reason and a hint; data.survey
puts the file and line in front. The rules:

chat        {"messages": [...]}: an optional system turn first, then user and assistant alternating,
            starting with user and ending with assistant (the turn that is trained). Every turn has a
            role and non-empty string content; `weight` (0 or 1, assistant turns only) leaves a turn
            untrained when 0, and at least one assistant turn must keep weight 1.
completion  {"prompt", "completion"}: strings, or message lists (the prompt ends with a user turn; the
            completion is assistant turns).
preference  {"prompt", "chosen", "rejected"}: the same, and chosen must differ from rejected.
unpaired    {"prompt", "completion", "label"}: a prompt and completion as above, and a label that is JSON's true
            (the completion is desirable) or false (undesirable), as trl's KTOTrainer takes them.
A prompt and its answers are all strings or all message lists: a string prompt with a list answer (or the
reverse) renders as neither.
text        {"text"}: a non-empty string.
No other fields are allowed (but a label field the spec names): a misspelled field would otherwise be
ignored without a word. A conversation has at most MAX_TURNS turns, a record at most MAX_DEPTH levels of
nesting, and no string holds a lone UTF-16 surrogate (not_a_record); a value that fits no format is
described with the likely fix (describe_unknown: a key in the wrong case, another tool's format). OpenAI's
tool calls (tools, tool_calls, tool turns) and message names are named as what ftc does not train yet (NOT_TRAINED).
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

Problem = tuple[str, "str | None"]

ROLES = ("system", "user", "assistant")
MAX_DEPTH = 100  # levels of nesting a record may have; chat data has 3
DEPTH_HINT = 'a record is an object of text and lists of messages, such as {"messages": [...]}'
_SURROGATE = re.compile(r"[\ud800-\udfff]")
MAX_TURNS = 1000  # turns of one conversation: each assistant turn is rendered with all those before it
MESSAGE_KEYS = ("role", "content", "weight")
# Roles other tools and datasets use, and what they are called here.
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant"}
# OpenAI's chat fields that ftc does not train yet, with the reason and a hint (in any chat data, and in format = "openai").
TOOLS = ("tool calls are not trained by ftc yet", "remove the tool turns (assistant turns with tool_calls and the tool results) and the tools, or leave these conversations out")
NOT_TRAINED = {
    "record": {"tools": TOOLS, "parallel_tool_calls": TOOLS, "functions": TOOLS},
    "message": {
        "tool_calls": TOOLS,
        "function_call": TOOLS,
        "name": ("ftc's chat templates do not render names", "remove the name, or write it into the content"),
    },
}
FIELDS = {
    "chat": ("messages",),
    "completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "unpaired": ("prompt", "completion", "label"),
    "text": ("text",),
}
# The formats each kind of training takes (a method's MethodDef.trains_on), and how messages name them.
# GRPO and RLOO ("prompts") sample their own completions of each prompt: of chat data, of every turn before the last
# assistant turn; the reference answer (that turn, or the completion) is what rewards and `ftc eval` compare with.
TRAINS_ON_FORMATS = {
    "demonstrations": ("chat", "completion", "text"),
    "preferences": ("preference",),
    "unpaired": ("unpaired",),
    "prompts": ("chat", "completion"),
}
TRAINS_ON_WORDS = {
    "preferences": "preference data (prompt, chosen, rejected)",
    "unpaired": "unpaired data (prompt, completion, label)",
    "prompts": "prompts with reference answers (chat, or prompt and completion)",
}
TRAINS_ON_FIELDS = {
    "preferences": "prompt, chosen and rejected",
    "unpaired": "prompt, completion and label (true or false)",
    "prompts": "messages that end with the reference answer's assistant turn, or a prompt and completion",
}
# A pair holds two unpaired examples (as trl's unpair_preference_dataset makes them); unpaired examples hold no pairs.
UNPAIR_HINT = (
    'each pair makes two unpaired examples, {"prompt", "completion": chosen, "label": true} and '
    '{"prompt", "completion": rejected, "label": false}: write them to a file and train on it'
)
_STRAY_LABEL_HINT = "a file holds one format: a label (true or false) on every record makes it unpaired data (for KTO); on none, completion data"
ANSWERS = {"completion": ("completion",), "preference": ("chosen", "rejected"), "unpaired": ("completion",)}


def record_problems(value: dict[str, Any], fmt: str, extra_fields: tuple[str, ...] = ()) -> list[Problem]:
    """Every problem of one record of format `fmt` (whose required fields are known to be present).
    `extra_fields` are allowed besides the format's own (the spec's data.label_field)."""
    allowed = FIELDS[fmt] + extra_fields
    problems = unknown_fields(value, allowed, "field", "a record has only " + ", ".join(allowed), ("the record", NOT_TRAINED["record"]))
    if fmt == "completion" and "label" in value and "label" not in allowed:  # unpaired data's label, in a completion file
        problems = [(m, _STRAY_LABEL_HINT if m == "unknown field 'label'" else h) for m, h in problems]
    if fmt == "chat":
        problems += conversation_problems(value["messages"], "messages")
    elif fmt == "text":
        problems += _text_problems(value["text"], "text")
    else:
        problems += _prompt_problems(value["prompt"])
        for key in ANSWERS[fmt]:
            problems += _answer_problems(value[key], key)
        problems += _mixed_problems(value, ANSWERS[fmt])
        if fmt == "preference" and value["chosen"] == value["rejected"] and value["chosen"] not in ("", []):
            problems.append(("chosen and rejected are identical: the pair teaches no preference", "make rejected the worse answer, or drop the pair"))
        if fmt == "unpaired":
            problems += _label_problems(value["label"])
    return problems


def _mixed_problems(value: dict[str, Any], answers: tuple[str, ...]) -> list[Problem]:
    """A string prompt with message-list answers, or the reverse: the chat template renders lists, plain text is
    joined as it is, and no rendering does both."""
    prompt = value["prompt"]
    if not isinstance(prompt, (str, list)) or not prompt:  # a prompt of neither shape is already a problem
        return []
    problems = []
    for key in answers:
        answer = value[key]
        if isinstance(answer, (str, list)) and answer and isinstance(answer, list) != isinstance(prompt, list):
            shapes = ("a list of messages", "a string") if isinstance(prompt, list) else ("a string", "a list of messages")
            problems.append((f"the prompt is {shapes[0]} but {key} is {shapes[1]}", "give both as strings, or both as lists of messages"))
    return problems


def _label_problems(label: Any) -> list[Problem]:
    """An unpaired example's label is JSON's true or false: a string or a number would pass a truthiness test and
    flip the meaning of "false" or "0" without a word."""
    hint = "write true (a desirable completion) or false (an undesirable one), without quotes"
    if isinstance(label, bool):
        return []
    meant = {"true": "true", "false": "false", "1": "true", "0": "false"}.get(str(label).strip().lower())
    if label is None:
        return [("label is null, not true or false", hint)]
    if isinstance(label, (str, int, float)):
        shown = repr(label[:40]) if isinstance(label, str) else str(label)
        return [(f"label is the {json_kind(label)} {shown}, not the JSON boolean {meant}" if meant else f"label is the {json_kind(label)} {shown}, not true or false", hint)]
    return [(f"label is {with_article(json_kind(label))}, not true or false", hint)]


def unknown_fields(value: dict[str, Any], allowed: tuple[str, ...], what: str, hint: str, not_trained: tuple[str, dict[str, Problem]] = ("", {})) -> list[Problem]:
    """A problem per field not in `allowed`; a field ftc knows but does not train (`not_trained`: whose field, and
    NOT_TRAINED's entries) is named as such."""
    problems = []
    owner, known = not_trained
    for key in sorted(set(value) - set(allowed)):
        if key in known:
            problems.append((f"{owner} has {key!r}: {known[key][0]}", known[key][1]))
            continue
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        problems.append((f"unknown {what} {key!r}", f"did you mean {close[0]!r}?" if close else hint))
    return problems


def with_article(word: str) -> str:
    """`a user`, `an assistant`; `null` stays bare."""
    if word == "null":
        return word
    return f"an {word}" if word[:1] in "aeio" else f"a {word}"


def json_kind(value: Any) -> str:
    """A JSON value's type, in JSON's words."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _text_problems(text: Any, where: str) -> list[Problem]:
    if text is None:
        return [(f"{where} is null", "give a string")]
    if not isinstance(text, str):
        return [(f"{where} is {with_article(json_kind(text))}, not a string", "give a string")]
    if not text.strip():
        return [(f"{where} is empty", "give some text, or remove the record")]
    return []


def _message_problems(message: Any, where: str) -> list[Problem]:
    if not isinstance(message, dict):
        return [(f"{where} is {with_article(json_kind(message))}, not an object", 'write {"role": ..., "content": ...}')]
    problems = unknown_fields(message, MESSAGE_KEYS, f"field in {where}", "a message has role, content and an optional weight", (where, NOT_TRAINED["message"]))
    role = message.get("role")
    if "role" not in message:
        problems.append((f"{where} has no role", "give role = system, user or assistant"))
    elif role in ("tool", "function"):
        problems.append((f"{where} is a {role!r} turn: {TOOLS[0]}", TOOLS[1]))
    elif role not in ROLES:
        plain = str(role).strip().lower()
        if plain in ROLES:
            hint = f"did you mean {plain!r}? roles are lowercase, without spaces"
        else:
            alias = ROLE_ALIASES.get(plain) or next(iter(difflib.get_close_matches(str(role), ROLES, n=1, cutoff=0.6)), None)
            hint = f"did you mean {alias!r}?" if alias else "roles are system, user and assistant"
        problems.append((f"{where} has unknown role {role!r}", hint))
    content = message.get("content")
    if message.get("content") is None and ("tool_calls" in message or "function_call" in message):
        pass  # an assistant turn that only calls tools: its tool calls are the problem
    elif "content" not in message:
        problems.append((f"{where} has no content", "give the turn's text as content"))
    elif isinstance(content, list) and content and all(isinstance(part, dict) and "type" in part for part in content):
        problems.append((f"{where} content is a list of parts, not a string", "join the text parts into one string: ftc trains on text content only"))
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
        return [(f"{where} is {with_article(json_kind(value))}, not a list of messages", 'write [{"role": "user", "content": ...}, ...]')], None
    if not value:
        return [(f"{where} is empty", "give at least a user turn and an assistant turn")], None
    if len(value) > MAX_TURNS:
        return [(
            f"{where} has {len(value)} turns, more than {MAX_TURNS}",
            "split it into shorter conversations, one per line: tokenizing a conversation takes time that grows with the square of its turns",
        )], None
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
        problems.append((f"the conversation starts with {with_article(turns[0][1])} turn (turn {turns[0][0]})", "begin with a user turn (after an optional system turn)"))
    for (_, previous), (i, role) in zip(turns, turns[1:]):
        if role == previous:
            problems.append((f"turn {i} is a second {role} turn in a row", "user and assistant turns must alternate; merge the two"))
    if turns[-1][1] != "assistant":
        problems.append((f"the last turn is {with_article(turns[-1][1])} turn", "supervised training needs an assistant answer last; remove the trailing turn or answer it"))
    answered = [m for m in messages if m["role"] == "assistant"]
    if answered and all(m.get("weight", 1) == 0 for m in answered):
        problems.append(("every assistant turn has weight 0: nothing in this example is trained", "give at least one assistant turn weight 1, or drop the example"))
    return problems


def _prompt_problems(value: Any) -> list[Problem]:
    if not isinstance(value, list):
        return _text_problems(value, "prompt")
    problems, messages = _messages(value, "prompt")
    if messages is not None and messages[-1]["role"] != "user":
        problems.append((f"the prompt ends with {with_article(messages[-1]['role'])} turn", "a prompt ends with the user turn that the answer replies to"))
    return problems


def _answer_problems(value: Any, key: str) -> list[Problem]:
    if not isinstance(value, list):
        return _text_problems(value, key)
    problems, messages = _messages(value, key)
    if messages is not None:
        for i, message in enumerate(messages, 1):
            if message["role"] != "assistant":
                problems.append((f"{key} turn {i} is {with_article(message['role'])} turn", f"{key} holds the assistant's answer only"))
    return problems


def not_a_record(value: Any, tabular: bool = False) -> tuple[str, str] | None:
    """What makes a decoded value no record, and a hint: nesting deeper than MAX_DEPTH, or a string with a lone
    surrogate; in a table's cell (tabular), also values that are no JSON (timestamps, bytes, NaN, infinities)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"is nested more than {MAX_DEPTH} levels deep", DEPTH_HINT
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                escape = found.group().encode("unicode_escape").decode()
                message = f"holds a lone surrogate {escape}: half of a UTF-16 pair, which is no character and which UTF-8 cannot encode"
                return message, "write the character itself, or both halves of its pair (such as \\ud83d\\ude00)"
        elif isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, float) and not math.isfinite(item):
            return f"holds {'NaN (a missing number)' if math.isnan(item) else 'an infinite number'}, which is no JSON value", "fill in or drop the missing values"
        elif tabular and not isinstance(item, (bool, int, float, type(None))):
            return f"holds {_type_name(item)}, which is no JSON value", "store the column as text or numbers, or drop it"
    return None


def _type_name(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    return with_article(type(value).__name__)


# Other tools' formats, known by a key, and how each becomes one of ours.
_OTHER_FORMATS = {
    "conversations": "this looks like ShareGPT data: rename conversations to messages, and in each turn from to role (human: user, gpt: assistant) and value to content",
    "instruction": "this looks like Alpaca data: make prompt from instruction and input, and completion from output",
    "non_preferred_output": 'this looks like OpenAI DPO data: set format = "openai" (or "auto"); every record of a file has one format',
    "preferred_output": 'this looks like OpenAI DPO data: set format = "openai" (or "auto"); every record of a file has one format',
}


def describe_unknown(value: Any, suffix: str) -> tuple[str, str]:
    """Why a value is no record of any format, and a hint."""
    if not isinstance(value, dict):
        message = f"a record must be a JSON object, got {with_article(json_kind(value))}"
        if isinstance(value, list) and suffix == ".jsonl":
            return message, "a .jsonl file holds one JSON object a line; a file that is one JSON array is a .json file"
        return message, 'a record is one JSON object, such as {"messages": [...]} or {"prompt": ..., "completion": ...}'
    # a key with spaces at its ends or with control characters (a terminal escape sequence) is shown quoted
    keys = ", ".join(k if k and k.isprintable() and k == k.strip() else repr(k) for k in sorted(value)) or "no keys"
    message = f"record has {keys}; expected messages, prompt+completion, prompt+chosen+rejected, prompt+completion+label, or text"
    if suffix == ".csv" and any(";" in key or "\t" in key for key in value):
        return message, "the header seems to separate its cells with ';' or tabs: save the file with commas between cells"
    known = sorted({key for keys in FIELDS.values() for key in keys})
    for key in sorted(value):
        plain = key.strip().lower()
        if plain in known and key not in known:
            return message, f"did you mean {plain!r}? keys are {'case-sensitive' if key.lower() == plain else 'written without spaces'}"
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close and close[0] not in value:
            return message, f"did you mean {close[0]!r}?"
        if key in _OTHER_FORMATS:
            return message, _OTHER_FORMATS[key]
    return message, "see `format` in the spec reference"
