"""vLLM's server as `ftc serve` runs it: the generation config and the command line it gets, and the process
handling (ready on /health, the log's tail, a failure with the log's end, stopping the whole group). The process
tests run a small stand-in server, a real process group with a child, in place of vLLM (test_serve.py starts
the real vLLM)."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from ftc.runtime.serve.settings import Settings
from ftc.runtime.serve.target import Target
from ftc.runtime.serve.vllm import (
    DROPPED_GENERATION_KEYS,
    ServeFailed,
    VllmServer,
    group_members,
    server_command,
    write_generation_config,
)

# Answers /health with 200 once listening; its child (like vLLM's engine core) ignores SIGINT when asked to.
STAND_IN = textwrap.dedent(
    """
    import http.server, signal, subprocess, sys
    print("(APIServer pid=1) INFO 01-02 03:04:05 [api_server.py:1] starting the stand-in", flush=True)
    ignore = "signal.signal(signal.SIGINT, signal.SIG_IGN); " if sys.argv[2] == "stubborn" else ""
    child = subprocess.Popen([sys.executable, "-c", ignore + "import time; time.sleep(600)"])

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stand_in(tmp_path: Path, child: str = "plain") -> VllmServer:
    port = free_port()
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    return VllmServer([sys.executable, str(script), str(port), child], {}, tmp_path / "logs" / "serve.log", "0.0.0.0", port)


def test_the_key_goes_through_the_environment_only(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "left-in-the-shell")
    target = Target("adapter", "base", None, tmp_path / "tok", None, None, tmp_path / "final", 16, None, None, False, tmp_path / "log")
    settings = Settings("127.0.0.1", 8000, "cpu", "float32", 256, "triage", "MY_KEY")
    argv, env = server_command(target, settings, tmp_path / "gen", "s3cret", None)
    assert "s3cret" not in " ".join(argv) and env["VLLM_API_KEY"] == "s3cret"
    assert argv[argv.index("--load-format") + 1] == "safetensors"
    assert argv[argv.index("--served-model-name") + 1] == "triage-base"
    assert argv[argv.index("--lora-modules") + 1] == f"triage={tmp_path / 'final'}"
    assert argv[argv.index("--max-lora-rank") + 1] == "16" and "--enforce-eager" in argv
    assert env["VLLM_CPU_KVCACHE_SPACE"] and env["HF_HUB_OFFLINE"] == "1"
    _, env = server_command(target, settings, tmp_path / "gen", None, 2)
    assert "VLLM_API_KEY" not in env and env["VLLM_CPU_KVCACHE_SPACE"] == "2"


def test_a_folder_on_the_cpu(tmp_path):
    template = tmp_path / "chat_template.jinja"
    target = Target("folder", str(tmp_path), "v1", None, None, None, None, None, None, template, True, tmp_path / "log")
    settings = Settings("127.0.0.1", 8001, "cpu", "float32", None, "tiny", None)
    argv, env = server_command(target, settings, tmp_path / "gen", None, None)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and argv[argv.index("--model") + 1] == str(tmp_path.resolve())
    assert argv[argv.index("--served-model-name") + 1] == "tiny" and argv[argv.index("--chat-template") + 1] == str(template)
    assert argv[argv.index("--revision") + 1] == "v1" and "--trust-remote-code" in argv
    assert "--max-model-len" not in argv and "--enable-lora" not in argv and "--tokenizer" not in argv
    assert argv[argv.index("--max-num-seqs") + 1] == "16" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    cuda = Settings("127.0.0.1", 8001, "cuda", "bfloat16", 1024, "tiny", None)
    argv, env = server_command(target, cuda, tmp_path / "gen", None, None)
    assert "--enforce-eager" not in argv and argv[argv.index("--max-model-len") + 1] == "1024"


def test_the_generation_config_stops_at_the_stop_ids_and_caps_nothing(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "generation_config.json").write_text(json.dumps({"eos_token_id": 7, "max_new_tokens": 20, "max_length": 64, "temperature": 0.6}))
    dropped = write_generation_config(model, [2, 9], tmp_path / "gen")
    assert dropped == ["max_new_tokens", "max_length"] and set(dropped) <= set(DROPPED_GENERATION_KEYS)
    assert json.loads((tmp_path / "gen" / "generation_config.json").read_text()) == {"eos_token_id": [2, 9], "temperature": 0.6}
    assert write_generation_config(None, [2], tmp_path / "adapter") == []  # an adapter's base: only the stop ids
    assert json.loads((tmp_path / "adapter" / "generation_config.json").read_text()) == {"eos_token_id": [2]}


def test_the_server_process_from_start_to_stop(tmp_path):
    server = _stand_in(tmp_path)
    assert server.url == f"http://127.0.0.1:{server.port}" and not server.running()
    server.start()
    try:
        ticks: list[str] = []
        elapsed = server.wait_ready(60, lambda seconds, line: ticks.append(line))
        assert server.running() and elapsed < 60
        assert server.tail() == ["starting the stand-in"]  # without vLLM's process and logger prefixes
        assert len(group_members(server.pid)) == 2  # the server and its child
    finally:
        status = server.stop(grace=10)
    assert status is not None and group_members(server.pid) == [] and not server.running()
    log = (tmp_path / "logs" / "serve.log").read_text()
    assert log.startswith("--- ftc serve: ") and "stand_in.py" in log.splitlines()[0]


def test_a_child_that_ignores_sigint_is_killed_after_the_grace(tmp_path):
    server = _stand_in(tmp_path, "stubborn")
    server.start()
    try:
        server.wait_ready(60, lambda seconds, line: None)
    finally:
        server.stop(grace=1)
    assert group_members(server.pid) == []


def test_a_server_that_dies_or_never_answers_fails_with_its_log(tmp_path):
    log = tmp_path / "serve.log"
    dying = VllmServer([sys.executable, "-c", "print('ERROR 01-02 03:04:05 [core.py:9] no such model'); raise SystemExit(3)"], {}, log, "127.0.0.1", free_port())
    dying.start()
    with pytest.raises(ServeFailed, match=r"(?s)exited with status 3 before it was ready.*\n  no such model"):
        dying.wait_ready(60, lambda seconds, line: None)
    silent = VllmServer([sys.executable, "-c", "import time; time.sleep(600)"], {}, log, "127.0.0.1", free_port())
    silent.start()
    try:
        with pytest.raises(ServeFailed, match=r"was not ready after 1s \(--ready-timeout\)"):
            silent.wait_ready(1, lambda seconds, line: None)
    finally:
        silent.stop(grace=5)
    assert not silent.running()
