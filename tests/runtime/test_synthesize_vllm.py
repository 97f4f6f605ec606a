"""`ftc data synthesize` against a real teacher: the tiny model served by `ftc serve` (vLLM, no mocks). Its random
weights write no usable examples, so every answer is dropped with its reason; what this shows is that a real
OpenAI-compatible server's answers are read (the model it serves found by /v1/models, chat completions parsed),
and that nothing is kept that fails the checks."""

from __future__ import annotations

import json

from logdata import chat, project
from test_serve import free_port, needs_vllm, serving  # noqa: F401  (serving is a fixture)


@needs_vllm
def test_a_served_tiny_model_as_the_teacher(tmp_path, tiny_model, serving, monkeypatch):  # noqa: F811
    from ftc.cli.main import main

    project(tmp_path, tiny_model, [chat(f"question {i}", f"answer {i}") for i in range(4)], [chat("held out", "yes")])
    port = free_port()
    serve = serving(tmp_path, str(tiny_model), "--port", str(port))
    serve.wait_for("Ctrl-C stops the server")
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{port}/v1"
    code = main(["data", "synthesize", "spec.toml", "--teacher", url, "--n", "2", "--per-request", "2",
                 "--max-tokens", "24", "--temperature", "0", "--out", "new.jsonl"])
    assert code == 0
    meta = json.loads((tmp_path / "new.jsonl.meta.json").read_text())
    assert meta["teacher"]["url"] == url and meta["teacher"]["model"]  # the one model /v1/models lists
    assert len(meta["requests"]) == 3  # 3 x ceil(2 / 2): every answer was dropped, so every attempt was made
    kept = (tmp_path / "new.jsonl").read_text().splitlines()
    assert meta["counts"]["kept"] == len(kept) == 0 and meta["counts"]["dropped"] == len(meta["dropped"]) >= 3
    for request in meta["requests"]:  # each answer is accounted for: parsed into items, or dropped as unparsed
        drops = [d for d in meta["dropped"] if d["request"] == request["request"]]
        assert drops and all(d["reason"] for d in drops)
        assert len(drops) == request["parsed"] + (drops[0]["item"] is None)
