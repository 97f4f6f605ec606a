"""`ftc serve`'s settings: the lock's serve section for a run, the command line over it, and the refusals
before anything starts (an unset API key variable, a busy port)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ftc.compiler.build.compile import compile_build
from ftc.runtime.models import RunFolder
from ftc.runtime.serve.settings import (
    DEFAULT_PARITY,
    ServeOptions,
    ServeRefused,
    Settings,
    api_key,
    check_port_free,
    is_loopback,
    resolve_settings,
)
from ftc.runtime.serve.target import Target

REPO = Path(__file__).resolve().parents[2]
SERVE = """
[serve]
host = "0.0.0.0"
port = 9000
served_model_name = "triage-bot"
api_key_env = "TRIAGE_KEY"
max_model_len = 512
dtype = "float16"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model) -> RunFolder:
    """A run folder of a compiled spec with a [serve] section (its lock is all resolve_settings reads)."""
    project = tmp_path_factory.mktemp("serve-settings")
    (project / "data").mkdir()
    train = (REPO / "specs" / "data" / "ticket_triage" / "val.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (project / "data" / "train.jsonl").write_text("".join(train[:4]), encoding="utf-8")
    (project / "spec.toml").write_text(
        f'[project]\nname = "triage"\n\n[model]\nbase = "{os.path.relpath(tiny_model, project)}"\n\n'
        '[data]\ntrain = "data/train.jsonl"\nformat = "chat"\nmax_length = 512\n\n[method]\nkind = "lora"\n\n'
        f'[training]\nmax_steps = 1\n\n[hardware]\naccelerator = "cpu"\n{SERVE}',
        encoding="utf-8",
    )
    build = compile_build(project / "spec.toml", root=project)
    return RunFolder(project / "runs" / "triage" / "r1", project, build.lock)


def _target(model: str, run: RunFolder | None = None) -> Target:
    return Target("folder", model, None, None, None, run, None, None, None, None, False, Path("serve.log"))


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.com")


def test_a_folder_gets_the_defaults():
    settings = resolve_settings(ServeOptions(Path("m")), _target("/models/tiny-llama"), "cpu")
    assert settings == Settings("127.0.0.1", 8000, "cpu", "float32", None, "tiny-llama", None)
    assert resolve_settings(ServeOptions(Path("m")), _target("/models/x"), "cuda").dtype == "bfloat16"
    assert ServeOptions(Path("m")).parity == DEFAULT_PARITY and ServeOptions(Path("m")).min_agreement == 1.0


def test_the_lock_gives_the_settings_and_the_command_line_overrides_them(run):
    locked = resolve_settings(ServeOptions(Path("run")), _target("run/merged", run), "cpu")
    assert locked == Settings("0.0.0.0", 9000, "cpu", "float16", 512, "triage-bot", "TRIAGE_KEY")
    options = ServeOptions(Path("run"), host="127.0.0.1", port=9100, dtype="bfloat16", max_model_len=256, served_model_name="t", api_key_env="K")
    assert resolve_settings(options, _target("run/merged", run), "cpu") == Settings("127.0.0.1", 9100, "cpu", "bfloat16", 256, "t", "K")
    # --dtype auto means: the lock's dtype for this device; the plan has none for a device it was not made for
    assert resolve_settings(ServeOptions(Path("run"), dtype="auto"), _target("run/merged", run), "cpu").dtype == "float16"
    assert resolve_settings(ServeOptions(Path("run")), _target("run/merged", run), "cuda").dtype == "bfloat16"


def test_the_api_key_comes_from_the_named_variable(monkeypatch):
    settings = Settings("127.0.0.1", 8000, "cpu", "float32", None, "m", "FTC_TEST_SERVE_KEY")
    monkeypatch.setenv("FTC_TEST_SERVE_KEY", "s3cret")
    assert api_key(settings) == "s3cret"
    monkeypatch.setenv("FTC_TEST_SERVE_KEY", "")
    with pytest.raises(ServeRefused, match=r"\$FTC_TEST_SERVE_KEY is not set \(or empty\)"):
        api_key(settings)
    assert api_key(Settings("127.0.0.1", 8000, "cpu", "float32", None, "m", None)) is None


def test_a_busy_port_is_refused():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeRefused, match="is a server already running there"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again
