"""The whole loop after the first model, as a user runs it, on the tiny random Llama with the real vLLM:

  1. a smoke run, then the champion trains; `ftc eval` scores it against zero-shot and few-shot prompting
  2. `ftc merge`, `ftc promote`
  3. `ftc serve NAME --log DIR` serves the promoted run; an openai client sends tickets, one of them held out
  4. feedback corrects some answers; `ftc data from-logs` writes the next data version and refuses the leak
  5. the challenger retrains on the champion's merged model with that data (a child run)
  6. `ftc eval CHALLENGER --against CHAMPION`, `ftc promote CHALLENGER`
  7. `ftc serve --ab` serves both behind one address; `ftc report --ab` compares the arms' feedback
  8. `ftc promote NAME --rollback`; `ftc runs` and `ftc diff` show the lineage

Nothing is mocked: each step is the `ftc` command line in a subprocess. About 5 minutes on 2 cores, most of it
vLLM starting three times.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_run import ftc
from test_serve import KEY, KEY_ENV, free_port, needs_vllm, serving  # noqa: F401 - the fixture
from tiny_runs import DATA

from ftc.runtime.exchanges import read_exchanges

NAME = "loop"
SPEC = """
[project]
name = "loop"
seed = 3

[model]
base = "{base}"

[data]
train = "{train}"
validation = "data/val.jsonl"
format = "chat"
max_length = 1024
packing = false

[method]
kind = "lora"
r = 4
lora_alpha = 8
target_modules = "all-linear"

[training]
max_steps = 2
learning_rate = {lr}
batch_size = 4
micro_batch_size = 4
scheduler = "constant"
report_to = []

[hardware]
accelerator = "cpu"

[evaluation]
metrics = ["chrf", "rouge_l"]
max_new_tokens = 8
baselines = ["zero_shot", "few_shot"]
few_shot_k = 2

[serve]
api_key_env = "{key_env}"
"""


def lines(name: str) -> list[str]:
    return DATA.joinpath(name).read_text(encoding="utf-8").splitlines(keepends=True)


def write_spec(root: Path, base: str, train: str, lr: str) -> None:
    (root / "spec.toml").write_text(SPEC.format(base=base, train=train, lr=lr, key_env=KEY_ENV), encoding="utf-8")


def ok(done, *expected: str) -> str:
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-6000:]
    for part in expected:
        assert part in text, f"{part!r} not in:\n{text[-6000:]}"
    return text


def newest(root: Path) -> Path:
    return sorted(p for p in (root / "runs" / NAME).iterdir() if p.is_dir())[-1]


def asked(record: str) -> tuple[list[dict], str]:
    """A ticket's messages up to its answer, and the reference answer."""
    messages = json.loads(record)["messages"]
    return messages[:-1], messages[-1]["content"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@needs_vllm
def test_the_loop_after_the_first_model(tmp_path, tiny_model, serving, monkeypatch):  # noqa: F811 - the fixture
    from openai import OpenAI

    monkeypatch.setenv(KEY_ENV, KEY)
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    train, val = lines("train.jsonl"), lines("val.jsonl")
    (root / "data" / "train.jsonl").write_text("".join(train[:16]), encoding="utf-8")
    (root / "data" / "val.jsonl").write_text("".join(val[:4]), encoding="utf-8")
    write_spec(root, os.path.relpath(tiny_model, root), "data/train.jsonl", "1e-6")

    # 1. start small, then train the champion and score it against prompting
    ok(ftc(root, "run", "spec.toml", "--smoke", "--smoke-steps", "2"), "smoke passed")
    assert not (root / "runs" / NAME).exists()  # the smoke run kept out of the real runs
    ok(ftc(root, "compile", "spec.toml"))
    ok(ftc(root, "run", "spec.toml", "--samples", "0"))
    champion = newest(root)
    ok(ftc(root, "eval", str(champion)), "few-shot")
    evaluation = json.loads((champion / "eval.json").read_text(encoding="utf-8"))
    assert set(evaluation["baselines"]) >= {"zero_shot", "few_shot"}
    # 2. merge, and promote the first model
    ok(ftc(root, "merge", str(champion)))
    ok(ftc(root, "promote", str(champion), "--reason", "first model"))

    # 3. serve the promoted run by its name, with logs; a client sends tickets (one is a held-out ticket)
    port, logs = free_port(), root / "logs"
    serve = serving(root, NAME, "--port", str(port), "--log", "logs", "--parity", "2", "--parity-tokens", "8")
    serve.wait_for("Ctrl-C stops the server")
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, timeout=300)
    traffic = {f"t-{k}": asked(train[100 + k]) for k in range(5)}
    traffic["t-leak"] = asked(val[0])
    served = {}
    for request_id, (messages, _) in traffic.items():
        reply = client.chat.completions.create(model=NAME, messages=messages, temperature=0, max_tokens=12,
                                               extra_headers={"X-Request-Id": request_id})
        served[request_id] = reply.choices[0].message.content
    code, left = serve.interrupt()
    assert code == 0 and left == [], serve.output
    logged = {e.id: e for _, _, e in read_exchanges(logs)}
    assert set(logged) == set(traffic)
    assert {e.run for e in logged.values()} == {str(champion.resolve())}

    # 4. feedback corrects three answers and rejects the held-out one's: the next data version, with no leak
    feedback = write_jsonl(root / "feedback.jsonl", [
        *({"id": f"t-{k}", "verdict": "bad", "correction": traffic[f"t-{k}"][1]} for k in range(3)),
        {"id": "t-3", "verdict": "bad"},
        {"id": "t-leak", "verdict": "bad", "correction": traffic["t-leak"][1]},
    ])
    ok(ftc(root, "data", "from-logs", "logs", "--spec", "spec.toml", "--feedback", str(feedback),
           "--out", "data/train-v2.jsonl", "--pairs", "data/pairs-v2.jsonl"))
    version = (root / "data" / "train-v2.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    assert version[:16] == train[:16] and len(version) == 19
    assert [json.loads(row)["messages"][-1]["content"] for row in version[16:]] == [traffic[f"t-{k}"][1] for k in range(3)]
    report = (root / "data" / "train-v2.jsonl.report.json").read_text(encoding="utf-8")
    assert "t-leak" in report and "held-out" in report
    assert traffic["t-leak"][1] not in "".join(version)

    # 5. the challenger: the champion's merged model, trained on the new data version (a child run)
    write_spec(root, (champion / "merged").relative_to(root).as_posix(), "data/train-v2.jsonl", "1e-2")
    ok(ftc(root, "compile", "spec.toml"))
    ok(ftc(root, "run", "spec.toml", "--samples", "0"))
    challenger = newest(root)
    lineage = json.loads((challenger / "run.json").read_text(encoding="utf-8"))["parent"]
    assert lineage["run"]["run_id"] == champion.name
    ok(ftc(root, "eval", str(challenger)))
    ok(ftc(root, "merge", str(challenger)))

    # 6. champion against challenger: promotion needs the passing comparison as its evidence
    refused = ftc(root, "promote", str(challenger))
    assert refused.returncode == 1 and "--against" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    ok(ftc(root, "eval", str(challenger), "--against", str(champion)))
    compared = json.loads((challenger / "against.json").read_text(encoding="utf-8"))
    assert compared["verdict"]["passed"] and compared["verdict"]["headline"] == "chrf"
    ok(ftc(root, "promote", str(challenger), "--reason", "retrained on corrected answers"))

    # 7. A/B: both runs behind one address, sticky per user; feedback per arm on one page
    port, ab_logs = free_port(), root / "logs-ab"
    arms = f"{champion.relative_to(root)}=0.5,{challenger.relative_to(root)}=0.5"
    serve = serving(root, "--ab", arms, "--port", str(port), "--log", "logs-ab", "--parity", "2", "--parity-tokens", "8")
    serve.wait_for("Ctrl-C stops the server")
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, timeout=300)
    answered = {}
    for k in range(12):
        messages, _ = asked(train[120 + k])
        raw = client.chat.completions.with_raw_response.create(
            model=NAME, messages=messages, temperature=0, max_tokens=8, user=f"user-{k}",
            extra_headers={"X-Request-Id": f"ab-{k}"},
        )
        answered[f"ab-{k}"] = raw.headers["x-ftc-arm"]
    code, left = serve.interrupt()
    assert code == 0 and left == [], serve.output
    assert set(answered.values()) == {str(champion.relative_to(root)), str(challenger.relative_to(root))}
    assert {e.id: e.arm for _, _, e in read_exchanges(ab_logs)} == answered
    ab_feedback = write_jsonl(root / "feedback-ab.jsonl", [
        {"id": request_id, "verdict": "good" if k % 3 else "bad"} for k, request_id in enumerate(answered)
    ])
    ok(ftc(root, "report", "--ab", "logs-ab", "--feedback", str(ab_feedback), "--output", "ab.html"))
    page = (root / "ab.html").read_text(encoding="utf-8")
    assert challenger.name in page and champion.name in page

    # 8. roll back to the champion; the runs and their lineage
    ok(ftc(root, "promote", NAME, "--rollback"))
    listed = json.loads(ok(ftc(root, "runs", NAME, "--json")))
    rows = {row["run_id"]: row for row in (listed["runs"] if isinstance(listed, dict) else listed)}
    assert rows[champion.name]["promoted"] is True and rows[challenger.name]["promoted"] is False
    diff = ok(ftc(root, "diff", str(champion), str(challenger)))
    assert "learning rate: 1e-06 -> 0.01" in diff and "data/train.jsonl -> data/train-v2.jsonl" in diff


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two test workers share two cores
