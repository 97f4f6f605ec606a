"""`ftc data synthesize`: a teacher's fixed answers (served by a small HTTP server in the test: its output is data)
are parsed and judged by the spec's checks, the JSON Schema and label field, held-out leakage (exact and near) and
duplicates; a teacher that does not answer exits 1 with the URL and nothing is written."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from invoke import invoke
from logdata import chat, project

from ftc.runtime.synthesize import jaccard, parse_answer, shingles

TRAIN = [chat(f"review: film number {i} was {'great' if i % 2 else 'dull'}", json.dumps({"label": "pos" if i % 2 else "neg"}))
         for i in range(6)]
HELD = "review: the film was a masterpiece of light and sound"
VALIDATION = [chat(HELD, '{"label": "pos"}')]
SCHEMA = {"type": "object", "properties": {"label": {"enum": ["pos", "neg", "meh"]}}, "required": ["label"]}
GOOD = chat("review: a quiet, careful drama", '{"label": "neg"}')
GOOD2 = chat("review: loud and silly fun", '{"label": "pos"}')
FIRST = [
    GOOD,
    chat(HELD.upper(), '{"label": "pos"}'),  # the held-out prompt itself
    chat(HELD + "!", '{"label": "pos"}'),  # nearly
    TRAIN[0],
    chat("review: a new one", '{"label": 5}'),  # fails the schema
    chat("review: another one", '{"label": "meh"}'),  # valid, but a label train never uses
    "just text",
    {"messages": [{"role": "user", "content": "no answer"}]},
    GOOD,
]
ANSWERS = [json.dumps(FIRST), "```json\n" + json.dumps([GOOD2]) + "\n```", "I cannot help with that.", json.dumps([GOOD])]


class Teacher(BaseHTTPRequestHandler):
    answers: ClassVar[list] = []
    seen: ClassVar[list] = []
    mode = "ok"

    def log_message(self, *args):
        pass

    def _send(self, status: int, body) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "teacher-1", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.mode == "500":
            return self._send(500, {"error": {"message": "overloaded"}})
        if self.mode == "shape":
            return self._send(200, {"result": "not openai"})
        content = type(self).answers.pop(0)
        self._send(200, {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})


@pytest.fixture
def teacher():
    Teacher.answers, Teacher.seen, Teacher.mode = list(ANSWERS), [], "ok"
    server = ThreadingHTTPServer(("127.0.0.1", 0), Teacher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def spec(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    project(tmp_path, tiny_model, TRAIN, VALIDATION, data='label_field = "label"',
            evaluation='\n[evaluation]\nmetrics = ["json_schema"]\njson_schema = "schema.json"\n', max_length=256)
    return tmp_path


def test_the_teachers_answers_are_judged(spec, teacher, capsys, monkeypatch):
    monkeypatch.setenv("TEACHER_KEY", "sk-secret-123")
    result = invoke(capsys, "data", "synthesize", "spec.toml", "--teacher", teacher, "--n", "3", "--out", "new.jsonl",
                    "--api-key-env", "TEACHER_KEY", "--seeds", "2", "--seed", "7", "--temperature", "0.5")
    assert result.code == 0, result.err
    kept = [json.loads(line) for line in (spec / "new.jsonl").read_text().splitlines()]
    assert kept == [GOOD, GOOD2]
    meta = json.loads((spec / "new.jsonl.meta.json").read_text())
    assert meta["teacher"] == {"url": teacher, "model": "teacher-1"}  # the one model the endpoint serves
    assert meta["settings"]["temperature"] == 0.5 and meta["settings"]["seed"] == 7 and len(meta["settings"]["template_sha256"]) == 64
    assert len(meta["requests"]) == 3 and all(len(r["seed_lines"]) == 2 for r in meta["requests"])  # 3 x ceil(3/5) requests
    assert {s["line"] for s in meta["seed_examples"]} == {line for r in meta["requests"] for line in r["seed_lines"]}
    assert all(s["record"] == TRAIN[s["line"] - 1] for s in meta["seed_examples"])
    reasons = [d["reason"] for d in meta["dropped"]]
    assert reasons[0].startswith("held-out prompt: the spec evaluates on it (data/val.jsonl:1)")
    assert reasons[1].startswith("near a held-out prompt: similarity 0.9")
    assert reasons[2] == "duplicate: repeats train line 1"
    assert reasons[3].startswith("failed the answer checks: the answer does not match evaluation.json_schema at label")
    assert reasons[4].startswith("failed the answer checks: label 'meh' is not one train uses")
    assert reasons[5] == "not a record: an example is a JSON object"
    assert reasons[6].startswith("failed the spec's checks: the last turn is a user turn")
    assert reasons[7] == "duplicate: repeats generated example #1"
    assert reasons[8].startswith("unparsed answer: the answer is not JSON")
    assert meta["counts"] == {"asked": 3, "kept": 2, "dropped": 9, "dropped_by_reason": {
        "duplicate": 2, "failed the answer checks": 2, "failed the spec's checks": 1, "held-out prompt": 1,
        "near a held-out prompt": 1, "not a record": 1, "unparsed answer": 1}}
    assert all(s["auth"] == "Bearer sk-secret-123" and s["path"] == "/v1/chat/completions" for s in Teacher.seen)
    first = Teacher.seen[0]["body"]
    assert first["model"] == "teacher-1" and first["temperature"] == 0.5 and "Write 3 new examples" in first["messages"][0]["content"]
    assert json.dumps(TRAIN[meta["requests"][0]["seed_lines"][0] - 1], sort_keys=True) in first["messages"][0]["content"]
    assert "sk-secret-123" not in (spec / "new.jsonl.meta.json").read_text() + result.out + result.err
    assert "warning: kept 2 of the 3 asked for after 3 request(s)" in result.err


def test_a_user_template_is_sandboxed(spec, teacher, capsys):
    (spec / "t.j2").write_text("Examples:\n{% for r in records %}{{ r.messages[0].content }}\n{% endfor %}Give {{ n }}.")
    result = invoke(capsys, "data", "synthesize", "spec.toml", "--teacher", teacher, "--n", "1", "--out", "new.jsonl",
                    "--template", "t.j2", "--model", "big", "--seeds", "1")
    assert result.code == 0, result.err
    prompt = Teacher.seen[0]["body"]["messages"][0]["content"]
    assert prompt.startswith("Examples:\nreview: film number") and prompt.endswith("Give 1.")
    assert Teacher.seen[0]["body"]["model"] == "big"
    (spec / "evil.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    result = invoke(capsys, "data", "synthesize", "spec.toml", "--teacher", teacher, "--n", "1", "--out", "x.jsonl",
                    "--template", "evil.j2", "--model", "big")
    assert result.code == 1 and "the template does not render" in result.err and not (spec / "x.jsonl").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["closed", "500", "shape"])
def test_a_teacher_that_does_not_answer(spec, teacher, capsys, mode):
    Teacher.mode = mode
    url = f"http://127.0.0.1:{_closed_port()}/v1" if mode == "closed" else teacher
    result = invoke(capsys, "data", "synthesize", "spec.toml", "--teacher", url, "--n", "2", "--out", "new.jsonl", "--model", "m")
    assert result.code == 1 and f"the teacher did not answer: {url}/chat/completions: " in result.err
    assert {"closed": "ConnectError", "500": "HTTP 500", "shape": "not an OpenAI chat completion"}[mode] in result.err
    assert "nothing written" in result.err
    assert not (spec / "new.jsonl").exists() and not (spec / "new.jsonl.meta.json").exists()


def test_usage_errors(spec, capsys):
    result = invoke(capsys, "data", "synthesize", "spec.toml", "--teacher", "http://x/v1", "--n", "0", "--out", "n.jsonl")
    assert result.code == 2 and "--n must be at least 1" in result.err
    result = invoke(capsys, "data", "synthesize", "spec.toml", "--teacher", "http://x/v1", "--n", "1", "--out", "n.jsonl",
                    "--api-key-env", "FTC_TEST_UNSET_VARIABLE")
    assert result.code == 2 and "the variable is not set" in result.err


def test_parsing_and_similarity():
    assert parse_answer('[{"a": 1}, {"b": 2}]') == ([{"a": 1}, {"b": 2}], None)
    assert parse_answer('```\n{"a": 1}\n```') == ([{"a": 1}], None)
    assert parse_answer("\n\n  \n") == ([], "the answer is empty")
    assert parse_answer('{"a": 1}\n{"b": 2}\n') == ([{"a": 1}, {"b": 2}], None)
    assert parse_answer("42")[1] == "the answer is a JSON int, not an array of examples"
    assert jaccard(shingles("abcd"), shingles("abcd")) == 1.0 and jaccard(shingles("abc"), shingles("xyz")) == 0.0
