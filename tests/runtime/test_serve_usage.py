"""What `ftc serve` prints once ready: how to call the model, with the key only as a variable's name."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from ftc.runtime.serve.settings import Settings
from ftc.runtime.serve.target import Target
from ftc.runtime.serve.usage import print_ready, usage_lines


def _target(adapter: Path | None = None, mode: str | None = None) -> Target:
    mode = mode or ("adapter" if adapter else "merged")
    return Target(mode, "runs/x/merged", None, None, None, None, adapter, None, None, None, False, Path("runs/x/serve.log"))


def test_the_usage_names_the_key_variable_never_the_key():
    settings = Settings("127.0.0.1", 8000, "cpu", "float32", None, "triage", "TRIAGE_KEY")
    text = "\n".join(usage_lines("http://127.0.0.1:8000", settings, _target()))
    assert "curl http://127.0.0.1:8000/v1/chat/completions" in text and '-H "Authorization: Bearer $TRIAGE_KEY"' in text
    assert 'api_key=os.environ["TRIAGE_KEY"]' in text and "import os" in text and '"model": "triage"' in text
    assert "-base" not in text


def test_without_a_key_and_with_an_adapter():
    settings = Settings("127.0.0.1", 8000, "cpu", "float32", None, "triage", None)
    text = "\n".join(usage_lines("http://127.0.0.1:8000", settings, _target(Path("final"))))
    assert "Authorization" not in text and 'api_key="unused"' in text and "import os" not in text
    assert '"triage-base" is the base alone' in text


def test_prompt_embeds_mode_says_what_the_front_does():
    settings = Settings("127.0.0.1", 8000, "cpu", "float32", None, "triage", None)
    text = "\n".join(usage_lines("http://127.0.0.1:8000", settings, _target(Path("final"), "prompt_embeds")))
    assert "-base" not in text
    assert "ftc's front puts the run's virtual tokens before each prompt" in text and "no streaming" in text


def test_the_ready_message():
    settings = Settings("0.0.0.0", 8000, "cpu", "float32", None, "triage", "TRIAGE_KEY")
    buffer = io.StringIO()
    print_ready(Console(file=buffer, width=200), "http://127.0.0.1:8000", settings, _target())
    text = buffer.getvalue()
    assert "ready: triage at http://127.0.0.1:8000/v1 (bound to 0.0.0.0:8000; clients must send the key in $TRIAGE_KEY)" in text
    assert "call it:" in text and "Ctrl-C stops the server. vLLM's log: runs/x/serve.log" in text
