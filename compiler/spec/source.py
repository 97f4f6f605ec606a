"""Positions of keys and values in TOML source text.

tomllib reports positions only for syntax errors, so diagnostics need their own map from a dotted key
path to `line:col`. The text is scanned after tomllib has accepted it, so the scanner can assume it is
well formed and only has to track strings, arrays, inline tables and comments.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

Path = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Span:
    line: int  # 1-based
    col: int  # 1-based
    length: int = 1


@dataclass
class SourceMap:
    """Where each key (its name) and each value starts. Tables map to their header line."""

    keys: dict[Path, Span] = field(default_factory=dict)
    values: dict[Path, Span] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def locate(self, path: Path, *, value: bool = True) -> Span:
        """The best span for `path`: the value (or key), else the nearest enclosing key, else line 1."""
        table = self.values if value else self.keys
        for end in range(len(path), 0, -1):
            prefix = tuple(path[:end])
            if prefix in table:
                return table[prefix]
            if prefix in self.keys:
                return self.keys[prefix]
        return Span(1, 1, 1)

    def has(self, path: Path) -> bool:
        return tuple(path) in self.keys


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.col = 1
        self.map = SourceMap(lines=text.splitlines())
        self.array_tables: dict[Path, int] = {}

    # -- low level --------------------------------------------------------------------------------
    def peek(self, n: int = 1) -> str:
        return self.text[self.i : self.i + n]

    def advance(self, n: int = 1) -> None:
        for _ in range(n):
            if self.i >= len(self.text):
                return
            if self.text[self.i] == "\n":
                self.line += 1
                self.col = 1
            else:
                self.col += 1
            self.i += 1

    def span(self, length: int = 1) -> Span:
        return Span(self.line, self.col, max(length, 1))

    def skip_blank(self, newlines: bool) -> None:
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#":
                while self.i < len(self.text) and self.text[self.i] != "\n":
                    self.advance()
            else:
                return

    # -- keys -------------------------------------------------------------------------------------
    def read_key(self) -> tuple[list[str], Span]:
        parts: list[str] = []
        start = self.span()
        end_col = start.col
        while True:
            self.skip_blank(newlines=False)
            if self.peek() in "\"'":
                basic = self.peek() == '"'
                raw = self.read_string_value()
                parts.append(_unescape(raw) if basic else raw)
            else:
                m = _BARE_KEY.match(self.text, self.i)
                if not m:
                    break
                parts.append(m.group(0))
                self.advance(len(m.group(0)))
            end_col = self.col
            self.skip_blank(newlines=False)
            if self.peek() == ".":
                self.advance()
                continue
            break
        return parts, Span(start.line, start.col, max(end_col - start.col, 1))

    def read_string_value(self) -> str:
        for quote in ('"""', "'''"):
            if self.peek(3) == quote:
                self.advance(3)
                begin = self.i
                while self.i < len(self.text):
                    if self.peek(3) == quote and not (quote == '"""' and self.text[self.i - 1] == "\\"):
                        end = self.i
                        self.advance(3)
                        while self.peek() == quote[0]:  # up to two quotes may end the content
                            self.advance()
                        return self.text[begin:end]
                    self.advance()
                return self.text[begin:]
        quote = self.peek()
        self.advance()
        begin = self.i
        while self.i < len(self.text) and self.text[self.i] != quote:
            if quote == '"' and self.text[self.i] == "\\":
                self.advance()
            self.advance()
        end = self.i
        self.advance()
        return self.text[begin:end]

    # -- values -----------------------------------------------------------------------------------
    def read_value(self, path: Path) -> None:
        start = self.span()
        c = self.peek()
        if c in "\"'":
            begin = self.i
            self.read_string_value()
            length = self.i - begin if self.line == start.line else 3
            self.map.values[path] = Span(start.line, start.col, length)
        elif c == "[":
            self.map.values[path] = start
            self.advance()
            index = 0
            while True:
                self.skip_blank(newlines=True)
                if self.peek() == "]":
                    self.advance()
                    break
                if self.peek() == ",":
                    self.advance()
                    continue
                self.map.keys[path + (index,)] = self.span()
                self.read_value(path + (index,))
                index += 1
        elif c == "{":
            self.map.values[path] = start
            self.advance()
            while True:
                self.skip_blank(newlines=False)
                if self.peek() == "}":
                    self.advance()
                    break
                if self.peek() == ",":
                    self.advance()
                    continue
                parts, key_span = self.read_key()
                sub = path + tuple(parts)
                self.map.keys[sub] = key_span
                self.skip_blank(newlines=False)
                self.advance()  # '='
                self.skip_blank(newlines=False)
                self.read_value(sub)
        else:
            m = re.compile(r"[^,\]\}\s#]+(?:[ T][0-9:.+\-Z]+)?").match(self.text, self.i)
            length = len(m.group(0)) if m else 1
            self.map.values[path] = Span(start.line, start.col, length)
            self.advance(length)

    # -- statements -------------------------------------------------------------------------------
    def scan(self) -> SourceMap:
        table: Path = ()
        while True:
            self.skip_blank(newlines=True)
            if self.i >= len(self.text):
                return self.map
            if self.peek(2) == "[[":
                start = self.span()
                self.advance(2)
                parts, _ = self.read_key()
                self.skip_blank(newlines=False)
                self.advance(2)
                base = tuple(parts)
                index = self.array_tables.get(base, -1) + 1
                self.array_tables[base] = index
                table = base + (index,)
                self.map.keys[table] = Span(start.line, start.col, self.col - start.col)
                self.map.keys.setdefault(base, self.map.keys[table])
            elif self.peek() == "[":
                start = self.span()
                self.advance()
                parts, _ = self.read_key()
                self.skip_blank(newlines=False)
                self.advance()
                table = tuple(parts)
                self.map.keys[table] = Span(start.line, start.col, self.col - start.col)
            else:
                parts, key_span = self.read_key()
                if not parts:  # not expected after tomllib accepted the text; stop rather than loop
                    return self.map
                path = table + tuple(parts)
                self.map.keys[path] = key_span
                self.skip_blank(newlines=False)
                self.advance()  # '='
                self.skip_blank(newlines=False)
                self.read_value(path)


def _unescape(raw: str) -> str:
    """A basic-string key as TOML reads it (`"a\\u001bb"` is a key with an ESC in it), or as written when it is broken."""
    try:
        return tomllib.loads(f'k = "{raw}"')["k"]
    except tomllib.TOMLDecodeError:
        return raw


def map_source(text: str) -> SourceMap:
    """Map every key of well-formed TOML `text` to the span of its key and of its value."""
    return _Scanner(text).scan()
