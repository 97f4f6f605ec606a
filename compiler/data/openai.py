"""OpenAI's fine-tuning JSONL formats, read as ftc's records and written from them (`ftc data convert`).

OpenAI's formats (its fine-tuning guide; openai-python 3.x) and what each is here:
SFT            {"messages": [...], "tools"?, "parallel_tool_calls"?}: ftc's chat record, as it is, when it has no
               tool calls (records.py names tools, tool_calls, tool turns and message names as what ftc does not
               train yet). Read with format = "auto", such a file is chat data.
DPO            {"input": {"messages": [...]}, "preferred_output": [one assistant message], "non_preferred_output":
               [one assistant message]}: ftc's preference record {"prompt": input.messages, "chosen":
               preferred_output, "rejected": non_preferred_output}. format = "auto" detects it (DPO_KEYS).
reinforcement  {"messages": [... ending with a user turn], <fields its graders read>}: refused at its line; ftc's
               GRPO takes chat records whose last assistant turn is the reference answer (`ftc api` makes them from
               a reinforcement job's items and grader: runtime/api/graders.py).

Reading (read_records): with format = "openai" every record is read as OpenAI's (a file holds SFT or DPO records,
not both); with "auto", when the file's first record is OpenAI DPO data. Each record becomes the ftc record it means
and every check of that format applies to it, at its own line (DPO's field names in the messages); the build trains
on its converted copy, and the lock's data.converted_from is "openai". Nothing is dropped without a problem.

Writing (convert_file): to OpenAI's, chat records as SFT and preference records as DPO; string prompts and answers,
and completion records, are wrapped into messages (they come back as message lists, not strings). Unpaired and
text data have no OpenAI format. To ftc's, SFT as chat and DPO as preference. OpenAI lines keep its documented key
order (OPENAI_ORDER), ftc lines the build's (sorted, clean.jsonl_line), so both round trips are lossless.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from ftc.compiler.atomic import replace_atomic
from ftc.compiler.data.clean import jsonl_line
from ftc.compiler.data.read import DataProblem, Record, detect_format, iter_records, survey
from ftc.compiler.data.records import TOOLS, Problem, conversation_problems, json_kind, unknown_fields, with_article

OPENAI = "openai"
DPO_KEYS = ("input", "preferred_output", "non_preferred_output")
INPUT_KEYS = ("messages",)
KINDS = {"sft": "SFT (messages)", "dpo": "DPO (input, preferred_output, non_preferred_output)"}
OPENAI_ORDER = ("messages", "input", "preferred_output", "non_preferred_output", "role", "content", "weight")
DPO_WORDS = {"prompt": "input.messages", "chosen": "preferred_output", "rejected": "non_preferred_output"}
_DPO_WORD = re.compile(r"\b(prompt|chosen|rejected)\b")
REINFORCEMENT = (
    "this is OpenAI reinforcement fine-tuning data (its messages end with a user turn, for graders to score the "
    "answer): ftc does not train on it from a file yet"
)
REINFORCEMENT_HINT = (
    'for GRPO (kind = "grpo" with [[method.rewards]]), ftc takes chat records whose last assistant turn is the '
    "reference answer: add each item's reference answer as a final assistant turn (a reinforcement job sent to "
    "`ftc api` does this from its grader)"
)


def is_dpo(value: Any) -> bool:
    """Whether a record has OpenAI DPO's keys (what format = "auto" detects as OpenAI data)."""
    return isinstance(value, dict) and set(DPO_KEYS) <= set(value)


def first_is_dpo(path: Path) -> bool:
    """Whether the first record of a file is OpenAI DPO data: format = "auto" then reads the file as OpenAI's."""
    return is_dpo(next((r.value for r in iter_records(path) if isinstance(r, Record)), None))


def dpo_words(message: str) -> str:
    """A problem of a converted DPO record, in DPO's field names (prompt -> input.messages, ...)."""
    return _DPO_WORD.sub(lambda m: DPO_WORDS[m.group()], message)


@dataclass
class Reading:
    """Reading one file as OpenAI's: `active` is None until the first record decides it (format = "auto"), and
    `kind` is the kind of OpenAI record ("sft" or "dpo") the file holds, set by its first one."""

    openai: bool | None
    kind: str | None = None

    def records(self, path: Path, display: str) -> Iterator[Record | DataProblem]:
        """The file's records, each OpenAI record as the ftc record it means, or the problems that keep it out."""
        for item in iter_records(path, display):
            if isinstance(item, Record) and self.openai is None:
                self.openai = is_dpo(item.value)
            if isinstance(item, DataProblem) or not self.openai or not isinstance(item.value, dict):
                yield item  # a value that is no object is described by the survey, as in any file
                continue
            value, problems = self._convert(item.value)
            if problems:
                yield from (DataProblem(display, item.line, message, hint, item.unit) for message, hint in problems)
            else:
                yield Record(item.line, value, item.unit)

    def words(self, problems: list[Problem]) -> list[Problem]:
        """The survey's problems of a converted record, named as the OpenAI record names its fields."""
        return [(dpo_words(m), h) for m, h in problems] if self.kind == "dpo" else problems

    def _convert(self, value: dict[str, Any]) -> tuple[Any, list[Problem]]:
        kind = "dpo" if is_dpo(value) else "sft" if "messages" in value else None
        if kind is None:
            found = detect_format(value)
            hint = f'this is ftc {found} data: use format = "auto" or "{found}"' if found else "see OpenAI's fine-tuning guide for its formats"
            keys = ", ".join(sorted(value)) or "no keys"
            return None, [(f"record has {keys}; OpenAI data has messages (SFT), or input, preferred_output and non_preferred_output (DPO)", hint)]
        self.kind = self.kind or kind
        if kind != self.kind:
            return None, [(f"record is OpenAI {KINDS[kind]} data, but the file is OpenAI {KINDS[self.kind]} data", "every record of a file has the same format: put SFT and DPO records in separate files")]
        return _from_dpo(value) if kind == "dpo" else _from_sft(value)


def read_records(path: Path, display: str, openai: bool | None) -> Iterator[Record | DataProblem]:
    """A file's records as ftc reads them: OpenAI's converted when `openai` (None: when its first record is DPO)."""
    return Reading(openai).records(path, display)


def _from_sft(value: dict[str, Any]) -> tuple[Any, list[Problem]]:
    """An SFT record is a chat record; its fields are checked as chat (records.py), but reinforcement data is named."""
    messages = value["messages"]
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "user":
        return None, [(REINFORCEMENT, REINFORCEMENT_HINT)]
    return value, []


def _from_dpo(value: dict[str, Any]) -> tuple[Any, list[Problem]]:
    """A DPO record as a preference record, or what keeps it from being one."""
    problems = unknown_fields(value, DPO_KEYS, "field", "an OpenAI DPO record has only " + ", ".join(DPO_KEYS))
    given = value["input"]
    prompt = None
    if not isinstance(given, dict):
        problems.append((f"input is {with_article(json_kind(given))}, not an object", 'write "input": {"messages": [...]}'))
    else:
        tools = [key for key in ("tools", "parallel_tool_calls") if key in given]
        problems += [(f"input has {key!r}: {TOOLS[0]}", TOOLS[1]) for key in tools]
        problems += unknown_fields({k: v for k, v in given.items() if k not in tools}, INPUT_KEYS, "field in input", "input has only messages")
        if "messages" not in given:
            problems.append(("input has no messages", 'write "input": {"messages": [...]}, the conversation up to the user turn the outputs answer'))
        else:
            prompt = given["messages"]
            last = prompt[-1] if isinstance(prompt, list) and prompt else None
            if isinstance(last, dict) and isinstance(last.get("role"), str) and last["role"] != "user":
                problems.append((f"input.messages ends with {with_article(str(last.get('role')))} turn, not a user turn", "input holds the conversation up to the user turn that the outputs answer"))
    for key in DPO_KEYS[1:]:
        output = value[key]
        if not isinstance(output, list):
            problems.append((f"{key} is {with_article(json_kind(output))}, not a list of one message", f'write "{key}": [{{"role": "assistant", "content": ...}}]'))
        elif len(output) != 1:
            problems.append((f"{key} holds {len(output)} messages: OpenAI DPO takes exactly one assistant message", "keep the one assistant answer"))
        elif isinstance(output[0], dict) and output[0].get("role") != "assistant":
            problems.append((f"{key} holds {with_article(str(output[0].get('role')))} message, not an assistant one", "an output is the assistant's answer"))
    if problems:
        return None, problems
    return {"prompt": prompt, "chosen": value["preferred_output"], "rejected": value["non_preferred_output"]}, []


def _turns(value: str | list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def to_openai(value: dict[str, Any], fmt: str) -> tuple[dict[str, Any] | None, list[Problem], bool]:
    """A well-formed ftc record of format `fmt` as OpenAI's: the record (None where it has none), its problems, and
    whether strings were wrapped into messages (or a completion record made a conversation): not reversible."""
    if fmt == "chat":
        return {"messages": value["messages"]}, [], False
    if fmt == "completion":
        messages = _turns(value["prompt"], "user") + _turns(value["completion"], "assistant")
        problems = [(f"as a conversation, {m}", h) for m, h in conversation_problems(messages, "messages")]
        return (None if problems else {"messages": messages}), problems, True
    if fmt == "preference":
        problems = []
        for key in ("chosen", "rejected"):
            if isinstance(value[key], list) and len(value[key]) != 1:
                problems.append((f"{key} holds {len(value[key])} messages: OpenAI DPO takes exactly one assistant message as {DPO_WORDS[key]}", "join them into one assistant message"))
        if problems:
            return None, problems, False
        record = {
            "input": {"messages": _turns(value["prompt"], "user")},
            "preferred_output": _turns(value["chosen"], "assistant"),
            "non_preferred_output": _turns(value["rejected"], "assistant"),
        }
        return record, [], isinstance(value["prompt"], str)
    return None, [(f"{fmt} data has no OpenAI format: OpenAI fine-tunes on conversations (SFT), preference pairs (DPO) and reinforcement prompts", _NO_OPENAI[fmt])], False


_NO_OPENAI = {
    "unpaired": "pair each prompt's desirable and undesirable completions into preference records (prompt, chosen, rejected), which convert to DPO",
    "text": "write the examples as conversations or prompt/completion records, which convert to SFT",
}


def openai_line(value: Any) -> str:
    """One record as a line of OpenAI JSONL: keys in OpenAI's documented order (OPENAI_ORDER, then sorted)."""
    return json.dumps(_ordered(value), ensure_ascii=False) + "\n"


def _ordered(value: Any) -> Any:
    if isinstance(value, dict):
        rank = {key: i for i, key in enumerate(OPENAI_ORDER)}
        return {k: _ordered(value[k]) for k in sorted(value, key=lambda k: (rank.get(k, len(rank)), k))}
    if isinstance(value, list):
        return [_ordered(v) for v in value]
    return value


@dataclass
class Conversion:
    """What `ftc data convert` did: the format it read, the records it wrote, how many were wrapped into messages,
    and the problems that kept it from writing (then it wrote nothing)."""

    source: str | None  # what was read: "OpenAI SFT", "OpenAI DPO", or "ftc <format>"
    target: str | None  # what was written, in the same words; None when nothing was
    records: int = 0
    wrapped: int = 0
    problems: list[DataProblem] = field(default_factory=list)


def _words(fmt: str | None, openai: bool) -> str | None:
    if fmt is None or not openai:
        return fmt and f"ftc {fmt}"
    return "OpenAI DPO" if fmt == "preference" else "OpenAI SFT"


class _Refused(Exception):
    """A record could not be converted while writing: the output is abandoned whole."""


def convert_file(path: Path, display: str, to: Literal["openai", "ftc"], out: Path) -> Conversion:
    """Convert a data file to OpenAI's formats or ftc's, writing `out` whole (compiler/atomic.py), or nothing when
    a record cannot be converted: then every problem is in the result."""
    reading = Reading(True if to == "ftc" else None)
    found = survey(path, display, openai=reading.openai)
    result = Conversion(_words(found.format, found.converted_from is not None), None, problems=list(found.problems))
    if to == "openai" and found.format in _NO_OPENAI:
        first = next(r for r in iter_records(path, display) if isinstance(r, Record))
        _, problems, _ = to_openai(first.value, found.format)
        result.problems += [DataProblem(display, first.line, m, h, first.unit) for m, h in problems]
    if result.problems or found.format is None:
        return result
    result.target = _words("preference" if found.format == "preference" else "chat", to == "openai")

    def fill(fh: IO[bytes]) -> None:
        for record in reading.records(path, display):
            if not isinstance(record, Record):
                continue  # blank lines: the survey found no problems
            if to == "ftc":
                line = jsonl_line(record.value)
            else:
                value, problems, wrapped = to_openai(record.value, found.format)  # type: ignore[arg-type]
                result.problems += [DataProblem(display, record.line, m, h, record.unit) for m, h in problems]
                result.wrapped += wrapped
                line = openai_line(value) if value is not None else ""
            result.records += 1
            fh.write(line.encode("utf-8"))
        if result.problems:
            raise _Refused

    try:
        replace_atomic(out, fill)
    except _Refused:
        result.records = result.wrapped = 0
    return result
