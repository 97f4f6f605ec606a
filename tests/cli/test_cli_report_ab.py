"""`ftc report --ab LOGS`: the A/B page from logs with two arms and feedback (shares with intervals, latency,
tokens, which arm is ahead and whether significantly); logs without arms are a clear error."""

from __future__ import annotations

import math

from invoke import invoke
from logdata import exchange, feedback, write_logs

from ftc.runtime.report.ab import percentile, two_proportion, wilson


def _logs(tmp_path, good_a: int, good_b: int, n: int = 40):
    exchanges, rows = [], []
    for arm, good, latency in (("base", good_a, 100.0), ("tuned", good_b, 50.0)):
        for i in range(n):
            ex = exchange(f"{arm}-{i}", f"q {i}", f"a <b>{i}</b>", arm=arm, latency_ms=latency + i, completion_tokens=4)
            exchanges.append(ex)
            verdict = {"id": ex.id, "verdict": "good" if i < good else "bad"}
            if i >= good and i % 2:
                verdict["correction"] = "fixed"
            rows.append(verdict)
    exchanges.append(exchange("none-1", "q", "a"))  # served before the arms: left out, and said so
    write_logs(tmp_path / "logs", exchanges)
    feedback(tmp_path / "fb.jsonl", rows)


def test_two_arms_with_a_significant_difference(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _logs(tmp_path, good_a=16, good_b=34)
    result = invoke(capsys, "report", "--ab", "logs", "--feedback", "fb.jsonl")
    assert result.code == 0, result.err
    page = (tmp_path / "logs" / "ab-report.html").read_text()
    assert result.out.startswith("tuned is ahead of base: 85.0% of 40 rated good against 40.0% of 40; significant")
    assert "wrote logs/ab-report.html" in result.out
    assert "<td>base</td><td class=\"num\">40</td>" in page and "<td>tuned</td>" in page
    assert "85.0% <span class=\"muted\">(70.9%–92.9%)</span>" in page  # Wilson 95%
    assert "1 exchange(s) without an arm are left out" in page
    assert "<b>" not in page and "<script" not in page and "http" not in page.split("<footer>")[0]
    assert "69 ms" in page and "139 ms" in page  # tuned's p50 (nearest rank: the 20th of 50..89), base's p99
    again = invoke(capsys, "report", "--ab", "logs", "--feedback", "fb.jsonl", "--output", "again.html")
    assert again.code == 0 and (tmp_path / "again.html").read_text() == page  # the same files give the same bytes


def test_a_difference_that_is_not_significant_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _logs(tmp_path, good_a=20, good_b=23)
    result = invoke(capsys, "report", "--ab", "logs", "--feedback", "fb.jsonl", "--output", "ab.html")
    assert result.code == 0 and "tuned is ahead of base" in result.out and "not significant" in result.out
    result = invoke(capsys, "report", "--ab", "logs", "--output", "ab.html")
    assert result.code == 0 and "fewer than two arms have rated answers" in result.out


def test_logs_without_arms_and_bad_usage(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_logs(tmp_path / "logs", [exchange("a", "q"), exchange("b", "q")])
    result = invoke(capsys, "report", "--ab", "logs")
    assert result.code == 1 and "no exchange has an arm: these logs come from one served model" in result.err
    assert not (tmp_path / "logs" / "ab-report.html").exists()
    feedback(tmp_path / "fb.jsonl", [{"id": "zzz", "verdict": "good"}])
    result = invoke(capsys, "report", "--ab", "logs", "--feedback", "fb.jsonl")
    assert result.code == 1 and "fb.jsonl:1: no exchange of the logs has id 'zzz'" in result.err
    assert invoke(capsys, "report").code == 2
    assert invoke(capsys, "report", "runs/x", "--ab", "logs").code == 2
    assert invoke(capsys, "report", "--ab", "missing").code == 2


def test_the_statistics():
    low, high = wilson(8, 10)
    assert math.isclose(low, 0.4902, abs_tol=1e-4) and math.isclose(high, 0.9433, abs_tol=1e-4)
    assert wilson(0, 0) is None and wilson(0, 5)[0] == 0.0
    z, p = two_proportion(34, 40, 16, 40)
    assert math.isclose(z, 0.45 / math.sqrt(0.625 * 0.375 * (2 / 40))) and math.isclose(p, math.erfc(z / math.sqrt(2)))
    assert math.isclose(z, 4.1569, abs_tol=1e-4) and p < 1e-4
    assert two_proportion(5, 10, 5, 10) == (0.0, 1.0) and two_proportion(1, 0, 1, 1) is None
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0 and percentile([1.0, 2.0], 99) == 2.0
    assert percentile([], 50) is None


def test_one_arm_has_nothing_to_compare(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_logs(tmp_path / "logs", [exchange("a", "q", arm="only")])
    result = invoke(capsys, "report", "--ab", "logs")
    assert result.code == 0 and "only one arm (only) answered: nothing to compare" in result.out
