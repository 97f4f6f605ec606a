"""Shared fixtures: the repository root, and a tiny random Llama for tests that train."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/tiny.py

# Golden builds record these versions instead of the installed ones, so they do not churn with upgrades.
GOLDEN_PACKAGES = {
    "accelerate": "1.15.0",
    "bitsandbytes": "0.50.2",
    "datasets": "5.2.0",
    "gguf": "0.19.0",
    "jsonschema": "4.26.0",
    "lm_eval": "0.4.13",
    "peft": "0.21.2",
    "rouge_score": "0.1.2",
    "sacrebleu": "2.6.0",
    "torch": "2.13.0+cpu",
    "transformers": "5.24.0",
    "trl": "1.16.0",
    "vllm": None,
}


def pytest_configure(config):
    """Tests press Ctrl-C at the ftc processes they start. Run from a background job (`nohup make test &`, a script's
    `cmd &`), pytest inherits SIGINT ignored, and so would every ftc it starts: Ctrl-C would do nothing there, as it
    should in a background job. A handler here (handlers are not inherited across exec) gives them the default back,
    as in a terminal. Runs in xdist's controller before it starts the workers, and in each worker."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/ from the current compiler")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tiny import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path_factory, monkeypatch):
    """Keep ftc's file-hash cache out of the user's home folder during tests."""
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ftc-cache"))
