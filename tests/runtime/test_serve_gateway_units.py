"""The pieces of `ftc serve --log` and `--ab` that need no server: redaction, the log folder, A/B weights and
routing, and the command line's refusals."""

from __future__ import annotations

import stat
from collections import Counter

import pytest

from ftc.cli.main import main
from ftc.runtime.exchanges import Exchange, read_exchanges
from ftc.runtime.serve.ab import ArmsRefused, Router, parse_ab
from ftc.runtime.serve.exchangelog import LogSetup, open_log
from ftc.runtime.serve.redact import Redactor


def test_builtin_redactions_and_counts():
    text = "mail jane.doe@example.co.uk, key sk-abcDEF1234567890xyz, Bearer abc123def456ghi789, call +1 555-123-4567"
    redacted, count = Redactor().text(text)  # the default: emails and keys
    assert redacted == "mail [EMAIL], key [KEY], [KEY], call +1 555-123-4567" and count == 3
    redacted, count = Redactor(["number"]).text("card 4111 1111 1111 1111, order 12345, v1.2.3, year 2024")
    assert redacted == "card [NUMBER], order 12345, v1.2.3, year 2024" and count == 1
    assert Redactor([]).text(text) == (text, 0)


def test_spec_patterns_and_messages():
    redactor = Redactor(["email"], [r"order-\d+", r"(?i)secret word"])
    messages = [{"role": "user", "content": "order-77 for a@b.io, the SECRET WORD"},
                {"role": "assistant", "content": [{"type": "text", "text": "order-8"}]}]
    value, count = redactor.value(messages)
    assert value == [{"role": "user", "content": "[REDACTED] for [EMAIL], the [REDACTED]"},
                     {"role": "assistant", "content": [{"type": "text", "text": "[REDACTED]"}]}]
    assert count == 4 and messages[0]["content"].startswith("order-77")  # the request itself is left alone
    with pytest.raises(ValueError, match="unknown redaction"):
        Redactor(["phone"])


def test_log_folder_is_private_and_rotates(tmp_path):
    folder = tmp_path / "logs" / "exchanges"
    log = open_log(LogSetup(folder, 1200, Redactor(), ("email", "key"), 0))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for k in range(6):
        log.append(Exchange(id=f"r{k}", time="2026-01-01T00:00:00+00:00", endpoint="chat", model="m",
                            messages=({"role": "user", "content": "x" * 50},), answer="y", latency_ms=1.0, status=200))
    files = sorted(folder.iterdir())
    assert len(files) > 1 and all(f.stat().st_size <= 1200 for f in files) and len(files) < 6
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert [e.id for _, _, e in read_exchanges(folder)] == [f"r{k}" for k in range(6)]


def test_ab_weights_are_parsed_and_checked():
    arms = parse_ab("runs/bot/1=0.9, runs/bot/2=0.1")
    assert [(a.label, a.weight) for a in arms] == [("runs/bot/1", 0.9), ("runs/bot/2", 0.1)]
    assert [a.label for a in parse_ab("a=b.toml=0.5,c=0.5")] == ["a=b.toml", "c"]  # the last = splits
    for text, message in [
        ("runs/a=1", "two arms or more"),
        ("a=0.5,b=0.6", "sum to 1.1"),
        ("a=1.5,b=-0.5", "every weight must be above 0"),
        ("a=0,b=1", "every weight must be above 0"),
        ("a=half,b=0.5", "not a number"),
        ("a,b=1", "not TARGET=WEIGHT"),
        ("a=0.5,a=0.5", "names a twice"),
        ("a=nan,b=1", "above 0"),
    ]:
        with pytest.raises(ArmsRefused, match=message):
            parse_ab(text)


def test_routing_follows_the_weights_and_sticks_to_a_user():
    router = Router([0.9, 0.1], seed=0)
    picks = Counter(router.pick(None) for _ in range(5000))
    assert 0.87 < picks[0] / 5000 < 0.93
    by_user = Counter(router.pick(f"user-{k}") for k in range(5000))
    assert 0.87 < by_user[0] / 5000 < 0.93
    assert {router.pick("alice") for _ in range(50)} == {router.pick("alice")}  # sticky
    assert [Router([0.5, 0.5], seed=3).pick(None) for _ in range(20)] == [Router([0.5, 0.5], seed=3).pick(None) for _ in range(20)]
    assert Router([0.5, 0.5]).pick("") in (0, 1)  # an empty user is not a user: a random arm


def test_cli_refuses_bad_ab_and_missing_target(tmp_path, capsys):
    assert main(["serve", "--ab", "a=0.5,b=0.6"]) == 2
    assert "the weights sum to 1.1; they must sum to 1" in capsys.readouterr().err
    assert main(["serve", "--ab", f"{tmp_path}=1"]) == 2
    assert "two arms or more" in capsys.readouterr().err
    assert main(["serve", "--ab", str(tmp_path)]) == 2  # one arm, no weight
    assert "is not TARGET=WEIGHT" in capsys.readouterr().err
    assert main(["serve", "x", "--ab", "a=0.5,b=0.5"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "give what to serve" in capsys.readouterr().err


def test_an_arm_that_is_not_a_run_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").mkdir()
    assert main(["serve", "--ab", "missing/run=0.9,notes=0.1", "--parity", "0"]) == 2
    assert "refused: not found: missing/run" in capsys.readouterr().err
    assert not list(tmp_path.glob("**/exchanges-*.jsonl"))


def test_an_unwritable_log_folder_is_refused_before_anything_starts(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception, match="cannot write the exchange log"):
        open_log(LogSetup(blocker / "logs", 1000, Redactor(), (), 0))


def test_the_spec_s_log_is_relative_to_the_project_root_and_carries_its_redaction(tmp_path):
    from types import SimpleNamespace

    from ftc.compiler.plan.model import ServePlan
    from ftc.runtime.serve.exchangelog import log_setup

    plan = ServePlan(host="127.0.0.1", port=8000, served_model_name="bot", api_key_env=None, max_model_len=256,
                     dtype={"cpu": "float32"}, log="logs/ex", log_redact=("number",), log_patterns=(r"order-\d+",), log_max_mb=2)
    target = SimpleNamespace(run=SimpleNamespace(root=tmp_path, lock=SimpleNamespace(serve=plan)))
    setup = log_setup(None, target)
    assert setup.folder == tmp_path / "logs" / "ex" and setup.max_bytes == 2 * 1024 * 1024
    assert setup.redactor.text("order-12 at 555 123 4567 a@b.io") == ("[REDACTED] at [NUMBER] a@b.io", 2)
    assert log_setup(tmp_path / "cli", target).folder == tmp_path / "cli"  # --log wins
    unlogged = SimpleNamespace(run=SimpleNamespace(root=tmp_path, lock=SimpleNamespace(serve=plan.model_copy(update={"log": None}))))
    assert log_setup(None, unlogged) is None  # nothing is logged unless asked
    assert log_setup(None, SimpleNamespace(run=None)) is None
