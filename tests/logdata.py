"""Projects and served exchanges for the tests of `ftc data from-logs`, `ftc data synthesize` and `ftc report --ab`:
a chat spec on the tiny model with a train and a validation file, and logs written through ExchangeLog."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ftc.runtime.exchanges import Exchange, ExchangeLog


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def project(root: Path, tiny_model: Path, train: list[dict], validation: list[dict] | None = None, data: str = "",
            evaluation: str = "", max_length: int = 64, fmt: str = "chat") -> Path:
    """spec.toml, data/train.jsonl and (unless None) data/val.jsonl under root."""
    write_jsonl(root / "data" / "train.jsonl", train)
    if validation is not None:
        write_jsonl(root / "data" / "val.jsonl", validation)
    (root / "spec.toml").write_text(
        f"""
[project]
name = "logs"

[model]
base = "{os.path.relpath(tiny_model, root)}"

[data]
train = "data/train.jsonl"
{'validation = "data/val.jsonl"' if validation is not None else ""}
format = "{fmt}"
max_length = {max_length}
{data}

[method]
kind = "lora"
{evaluation}
""",
        encoding="utf-8",
    )
    return root / "spec.toml"


def exchange(id: str, question: str | None, answer: str | None = "served answer", **fields) -> Exchange:
    base = {
        "id": id, "time": "2026-12-08T00:00:00Z", "endpoint": "chat", "model": "m", "latency_ms": 12.5, "status": 200,
        "messages": ({"role": "user", "content": question},) if question is not None else None, "answer": answer,
        "prompt_tokens": 7, "completion_tokens": 3,
    }
    return Exchange(**{**base, **fields})


def write_logs(folder: Path, exchanges: list[Exchange], max_bytes: int = 64 * 1024 * 1024) -> Path:
    log = ExchangeLog(folder, max_bytes=max_bytes)
    for ex in exchanges:
        log.append(ex)
    return folder


def feedback(path: Path, rows: list[dict]) -> Path:
    write_jsonl(path, rows)
    return path
