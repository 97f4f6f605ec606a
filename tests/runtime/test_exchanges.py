"""runtime/exchanges.py: the serving log's records, its rotation, and reading it back with file:line errors."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from ftc.runtime.exchanges import Exchange, ExchangeError, ExchangeLog, log_files, read_exchanges, request_id_of


def _exchange(i: int, **fields) -> Exchange:
    return Exchange(
        id=f"req-{i}", time="2026-12-08T00:00:00Z", endpoint="chat", model="m",
        messages=({"role": "user", "content": f"question {i}"},), answer=f"answer {i}", latency_ms=1.5, status=200,
        **fields,
    )


def test_appends_and_reads_back_in_order(tmp_path: Path):
    log = ExchangeLog(tmp_path / "logs")
    for i in range(5):
        log.append(_exchange(i))
    read = list(read_exchanges(tmp_path / "logs"))
    assert [e.id for _, _, e in read] == [f"req-{i}" for i in range(5)]
    assert [n for _, n, _ in read] == [1, 2, 3, 4, 5]
    record = json.loads((tmp_path / "logs" / "exchanges-000001.jsonl").read_text().splitlines()[0])
    assert record["format_version"] == 1 and record["arm"] is None  # every key is written, defaults included
    assert os.stat(log.path).st_mode & 0o777 == 0o600


def test_rotates_by_size_and_a_restart_continues_after_the_last_file(tmp_path: Path):
    size = len(json.dumps(_exchange(0).model_dump(mode="json"))) + 1
    log = ExchangeLog(tmp_path, max_bytes=2 * size + 10)
    for i in range(5):
        log.append(_exchange(i))
    assert [p.name for p in log_files(tmp_path)] == ["exchanges-000001.jsonl", "exchanges-000002.jsonl", "exchanges-000003.jsonl"]
    again = ExchangeLog(tmp_path, max_bytes=2 * size + 10)
    again.append(_exchange(5))
    assert len(log_files(tmp_path)) == 3  # the last file had room for one more
    assert [e.id for _, _, e in read_exchanges(tmp_path)] == [f"req-{i}" for i in range(6)]


def test_threads_never_interleave_lines(tmp_path: Path):
    log = ExchangeLog(tmp_path, max_bytes=4096)
    threads = [threading.Thread(target=lambda k=k: [log.append(_exchange(100 * k + i)) for i in range(25)]) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.id for _, _, e in read_exchanges(tmp_path)) == sorted(f"req-{100 * k + i}" for k in range(4) for i in range(25))


def test_malformed_lines_name_the_file_and_line(tmp_path: Path):
    log = ExchangeLog(tmp_path)
    log.append(_exchange(0))
    with log.path.open("a") as f:
        f.write('{"id": "x"}\n')
    with pytest.raises(ExchangeError, match=r"exchanges-000001\.jsonl:2: .*time"):
        list(read_exchanges(tmp_path))
    log.path.write_text(log.path.read_text().splitlines()[0] + "\nnot json\n")
    with pytest.raises(ExchangeError, match=r":2: not a JSON object"):
        list(read_exchanges(log.path))


def test_an_unfinished_last_line_is_skipped_and_an_empty_folder_is_an_error(tmp_path: Path):
    log = ExchangeLog(tmp_path / "a")
    log.append(_exchange(0))
    with log.path.open("a") as f:
        f.write('{"id": "half')
    assert [e.id for _, _, e in read_exchanges(tmp_path / "a")] == ["req-0"]
    (tmp_path / "b").mkdir()
    with pytest.raises(ExchangeError, match="no exchanges-NNNNNN.jsonl files"):
        list(read_exchanges(tmp_path / "b"))


def test_client_request_ids():
    assert request_id_of("ticket-42") == "ticket-42"
    assert request_id_of(None) is None
    assert request_id_of("has space") is None
    assert request_id_of("x" * 129) is None
