"""The quickstart through `ftc api`, as a team moving off OpenAI would run it, against `ftc run` on the same spec.

It starts `ftc api` with one base model, "smollm2-135m", whose supervised jobs start from specs/quickstart.toml;
converts the quickstart's ticket chats to OpenAI's JSONL with `ftc data convert --to openai`; and, with the official
openai client only, uploads them, creates a supervised job with every hyperparameter "auto", and polls it to
succeeded. Then it compares the job with a finished `ftc run specs/quickstart.toml` (--reference, default the newest
completed run under runs/quickstart/):
  - the logged training and validation losses, step by step, and the trained adapter's bytes (sha256);
  - the held-out scores: `ftc eval REFERENCE` (local transformers, written once to REFERENCE/eval.json) against
    `ftc eval REFERENCE --endpoint <ftc api> --endpoint-model ft:...`, which asks the job's model through ftc api's
    own /v1/chat/completions (vLLM behind it, after the parity gate) and compares its answers with eval.json's.

    .venv/bin/python bench/api_quickstart.py [--reference runs/quickstart/RUN]

About 15 minutes on a 2-core CPU (the job trains for about 4, each `ftc eval` takes about 5). Writes
runs/api-quickstart/result.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from openai import OpenAI

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "runs" / "api-quickstart"
DATA = REPO / "specs" / "data" / "ticket_triage"
KEY_ENV = "FTC_API_BENCH_KEY"
ADAPTER = "final/adapter_model.safetensors"
METRICS = ("json_valid", "accuracy", "rouge_l", "exact_match", "chrf")


def ftc(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftc.cli", *args], cwd=REPO, check=True, **kwargs)


def newest_reference() -> Path:
    runs = [p for p in sorted((REPO / "runs" / "quickstart").glob("*")) if (p / "run.json").is_file() and json.loads((p / "run.json").read_text())["status"] == "completed"]
    if not runs:
        sys.exit("no completed quickstart run: run `make quickstart` first")
    return runs[-1]


def losses(run: Path) -> list[tuple[int, str, float]]:
    found = []
    for line in (run / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        for key in ("loss", "eval_loss"):
            if event.get("event") == "log" and key in event:
                found.append((event["step"], key, event[key]))
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_server(port: int, key: str) -> subprocess.Popen:
    HERE.mkdir(parents=True, exist_ok=True)
    (HERE / "api.toml").write_text(
        f'[server]\nport = {port}\napi_key_env = "{KEY_ENV}"\nstate = "state"\n\n'
        f'[models."smollm2-135m"]\nsupervised = "{REPO / "specs" / "quickstart.toml"}"\n',
        encoding="utf-8",
    )
    log = (HERE / "server.log").open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "ftc.cli", "api", str(HERE / "api.toml")], cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **{KEY_ENV: key}), start_new_session=True,
    )
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    sys.exit("ftc api did not start; see runs/api-quickstart/server.log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, help="a completed run of specs/quickstart.toml (default: the newest)")
    args = parser.parse_args()
    reference = (args.reference or newest_reference()).resolve()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = secrets.token_urlsafe(16)
    os.environ[KEY_ENV] = key
    for split in ("train", "val"):
        ftc("data", "convert", str(DATA / f"{split}.jsonl"), "--to", "openai", "--out", str(HERE / f"{split}.openai.jsonl"))
    server = start_server(port, key)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=1800, max_retries=0)
        began = time.monotonic()
        train = client.files.create(file=open(HERE / "train.openai.jsonl", "rb"), purpose="fine-tune")
        val = client.files.create(file=open(HERE / "val.openai.jsonl", "rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=train.id, validation_file=val.id, suffix="triage")
        while job.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(5)
            job = client.fine_tuning.jobs.retrieve(job.id)
        seconds = time.monotonic() - began
        if job.status != "succeeded":
            sys.exit(f"{job.id} {job.status}: {job.error}")
        print(f"{job.id} succeeded in {seconds:.0f}s as {job.fine_tuned_model}; hyperparameters {job.method.supervised.hyperparameters}")
        run = next((HERE / "state" / "jobs" / job.id / "runs").glob("*/*/run.json")).parent
        ours, theirs = losses(run), losses(reference)
        same_losses = ours == theirs
        same_adapter = sha256(run / ADAPTER) == sha256(reference / ADAPTER)
        print(f"losses identical at every logged step ({len(ours)}): {same_losses}; adapter bytes identical: {same_adapter}")
        while job.fine_tuned_model not in [m.id for m in client.models.list().data]:  # listed once the gate passed
            time.sleep(5)
        if not (reference / "eval.json").is_file():
            ftc("eval", str(reference))
        ftc("eval", str(reference), "--endpoint", f"http://127.0.0.1:{port}/v1", "--endpoint-model", job.fine_tuned_model, "--api-key-env", KEY_ENV)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=120)
    local = json.loads((reference / "eval.json").read_text())
    served = json.loads((reference / "eval-endpoint.json").read_text())
    result = {
        "job": job.id, "fine_tuned_model": job.fine_tuned_model, "job_seconds": round(seconds),
        "hyperparameters": job.method.supervised.hyperparameters.model_dump(warnings=False), "reference": str(reference.relative_to(REPO)),
        "losses_identical": same_losses, "logged_losses": len(ours), "adapter_identical": same_adapter,
        "scores": {side: {m: doc["metrics"].get(m, {}).get("tuned") for m in METRICS} for side, doc in (("ftc run + ftc eval", local), ("ftc api job, served", served))},
        "answers_equal_to_local": served["endpoint"]["answers_equal_to_local"],
    }
    (HERE / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print("\n| | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS))
    for side, scores in result["scores"].items():
        print(f"| {side} | " + " | ".join("" if scores[m] is None else f"{scores[m]:.3f}" for m in METRICS) + " |")
    print(f"\nserved answers equal to the local ones: {result['answers_equal_to_local']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
