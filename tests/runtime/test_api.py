"""`ftc api` end to end with the official `openai` client only (hand-made HTTP only where the client cannot send
the case), a real server process, real ftc jobs on a tiny Llama, and real vLLM behind the tuned model:

  - examples/openai_migration.py (OpenAI's guide with base_url and the model changed): upload, create, poll to
    succeeded, events, checkpoints, chat with the ft: model; then the job object, result files and /v1/models;
  - a malformed upload fails validation with its line named; a wrong key gets 401; unknown fields, a python grader
    and unknown ids get OpenAI's errors;
  - the deprecated top-level hyperparameters field is accepted; cancel while running; pause and resume;
  - kill -9 the server while a job runs, restart it, and the job completes from its sealed checkpoint.
The jobs run one at a time on the server, so the tests share one and run in the order written.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from test_serve import needs_vllm

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "specs" / "data" / "ticket_triage"
KEY_ENV, KEY = "FTC_API_TEST_KEY", "api-test-key-9f2c"
JOB_TIMEOUT = 900  # seconds a tiny job may take on a loaded 2-core machine (serving included)

openai = pytest.importorskip("openai")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lines(path: Path, count: int) -> str:
    return "".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:count])


class Server:
    """`ftc api` as a child process; start() again after a kill reuses its state folder."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", VLLM_ENABLE_V1_MULTIPROCESSING="0", **{KEY_ENV: KEY})
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ftc.cli", "api", "api.toml", "--port", str(self.port)],
            cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("ftc api did not start:\n" + self.log())

    def log(self) -> str:
        return (self.folder / "server.log").read_text(encoding="utf-8", errors="replace")[-5000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig) if sig == signal.SIGKILL else self.process.send_signal(sig)
            self.process.wait(timeout=180)

    def client(self, key: str = KEY):
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tiny import make_varied_tiny_llama

    folder = tmp_path_factory.mktemp("api")
    model = make_varied_tiny_llama(folder / "tiny-varied")
    (folder / "train.jsonl").write_text(_lines(DATA / "train.jsonl", 8), encoding="utf-8")
    (folder / "val.jsonl").write_text(_lines(DATA / "val.jsonl", 4), encoding="utf-8")
    (folder / "long.jsonl").write_text(_lines(DATA / "train.jsonl", 64), encoding="utf-8")
    # The server's spec for supervised jobs: a sealed checkpoint every step, so that a stop loses no work.
    (folder / "sft.toml").write_text(f"""
[project]
name = "tiny-sft"
seed = 3

[model]
base = "{model.name}"

[data]
train = "train.jsonl"
validation = "val.jsonl"
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
learning_rate = 1e-2
batch_size = 4
micro_batch_size = 4
logging_steps = 1
save_steps = 1
report_to = []

[hardware]
accelerator = "cpu"
""", encoding="utf-8")
    (folder / "grpo.toml").write_text(f"""
[project]
name = "tiny-grpo"
seed = 3

[model]
base = "{model.name}"

[data]
train = "train.jsonl"
format = "chat"
max_length = 1024

[method]
kind = "grpo"
num_generations = 2
max_completion_length = 8
r = 4
lora_alpha = 8
target_modules = "all-linear"

[[method.rewards]]
kind = "json_valid"

[training]
max_steps = 2
learning_rate = 1e-5
batch_size = 2
micro_batch_size = 2
logging_steps = 1
report_to = []

[hardware]
accelerator = "cpu"
""", encoding="utf-8")
    (folder / "dpo.toml").write_text(f"""
[project]
name = "tiny-dpo"
seed = 3

[model]
base = "{model.name}"

[data]
train = "train.jsonl"
format = "preference"
max_length = 1024

[method]
kind = "dpo"
adapter = "lora"
r = 4
lora_alpha = 8
target_modules = "all-linear"

[training]
epochs = 1
learning_rate = 1e-3
batch_size = 4
micro_batch_size = 4
logging_steps = 1
report_to = []

[hardware]
accelerator = "cpu"
""", encoding="utf-8")
    (folder / "api.toml").write_text(f"""
[server]
api_key_env = "{KEY_ENV}"
state = "state"
parity = 2

[models.tiny]
supervised = "sft.toml"
dpo = "dpo.toml"
reinforcement = "grpo.toml"
""", encoding="utf-8")
    running = Server(folder)
    running.start()
    yield running
    running.stop()


def _wait(client, job_id: str, statuses: tuple[str, ...], timeout: float = JOB_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(1)
    raise AssertionError(f"{job_id} is still {job.status} after {timeout}s")


def _wait_for_event(client, job_id: str, words: str, timeout: float = JOB_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job_id, limit=1000).data
        found = [e for e in events if words in e.message]
        if found:
            return found[0]
        time.sleep(1)
    raise AssertionError(f"no event of {job_id} says {words!r}")


@needs_vllm
def test_openai_migration_example(server):
    """The guide's script, unchanged but for base_url and the model: it trains, lists, and the model answers."""
    env = dict(os.environ, OPENAI_API_KEY=KEY, PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "openai_migration.py"), "--base-url", server.url, "--model", "tiny",
         "--train", "train.jsonl", "--validation", "val.jsonl", "--suffix", "triage"],
        cwd=server.folder, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + server.log()
    assert "succeeded" in result.stdout and "training loss=" in result.stdout
    assert "checkpoint at step 2" in result.stdout
    answer = next(line for line in result.stdout.splitlines() if " answers: " in line)
    assert answer.startswith("ft:tiny:triage:ftjob-")

    client = server.client()
    job = client.fine_tuning.jobs.list(limit=1).data[0]
    assert job.fine_tuned_model == answer.split(" answers: ")[0]
    # "auto" resolved by the planner and returned, as OpenAI returns it: 2 steps of 4 over 8 examples is 1 epoch
    assert job.method.supervised.hyperparameters.n_epochs == 1
    assert job.method.supervised.hyperparameters.batch_size == 4
    assert job.method.supervised.hyperparameters.learning_rate_multiplier == 1
    assert job.trained_tokens and job.trained_tokens > 0
    metrics = [e for e in client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100).data if e.type == "metrics"]
    assert {e.data["step"] for e in metrics} >= {1, 2} and all(e.data["train_loss"] > 0 for e in metrics if "train_loss" in e.data)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [2, 1]  # newest first
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-2"
    assert checkpoints[0].metrics.train_loss is not None and checkpoints[0].metrics.valid_loss is not None

    names = {client.files.retrieve(f).filename.split("-", 2)[-1]: f for f in job.result_files}
    assert set(names) == {"spec.toml", "ftc.lock.json", "report.html"}
    spec = client.files.content(names["spec.toml"]).text
    assert f'name = "{job.id}"' in spec and 'train = "train.jsonl"' in spec
    lock = json.loads(client.files.content(names["ftc.lock.json"]).text)
    assert lock["project"]["name"] == job.id

    models = [m.id for m in client.models.list().data]
    assert job.fine_tuned_model in models and "tiny" in models
    assert client.models.retrieve(job.fine_tuned_model).model_extra["max_model_len"] == 1024  # vLLM's, passed on
    again = client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0)
    assert again.choices[0].message.content is not None


def test_wrong_key_gets_401(server):
    with pytest.raises(openai.AuthenticationError) as caught:
        server.client("not-the-key").fine_tuning.jobs.list()
    assert caught.value.status_code == 401
    request = urllib.request.Request(server.url + "/fine_tuning/jobs")  # no key at all: the client always sends one
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=10)
    assert missing.value.code == 401 and json.loads(missing.value.read())["error"]["code"] == "invalid_api_key"


def test_malformed_upload_fails_validation_naming_the_line(server):
    client = server.client()
    bad = _lines(DATA / "train.jsonl", 2) + '{"messages": [{"role": "user", "content": "no answer"}]}\n' + _lines(DATA / "train.jsonl", 3)[-1:]
    (server.folder / "bad.jsonl").write_text(bad, encoding="utf-8")
    uploaded = client.files.create(file=server.folder / "bad.jsonl", purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="tiny")
    assert job.status == "validating_files"
    job = _wait(client, job.id, ("failed", "succeeded"))
    assert job.status == "failed"
    assert job.error.param == "training_file" and job.error.code == "invalid_training_file"
    assert f"{uploaded.id} line 3: the last turn is a user turn" in job.error.message


def test_requests_refused_with_openai_errors(server):
    client = server.client()
    uploaded = client.files.create(file=server.folder / "train.jsonl", purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as unknown:
        client.fine_tuning.jobs.create(training_file=uploaded.id, model="tiny", extra_body={"n_epoch": 3})
    assert unknown.value.body["param"] == "n_epoch" and "unknown parameter" in unknown.value.body["message"]
    with pytest.raises(openai.BadRequestError) as model:
        client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini-2024-07-18")
    assert model.value.body["param"] == "model" and "offers: tiny" in model.value.body["message"]
    grader = {"type": "python", "name": "g", "source": "def grade(sample, item): return 1.0"}
    with pytest.raises(openai.BadRequestError) as python:
        client.fine_tuning.jobs.create(training_file=uploaded.id, model="tiny", method={"type": "reinforcement", "reinforcement": {"grader": grader}})
    assert "never runs code" in python.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-0123456789abcdef01234567")
    with pytest.raises(openai.BadRequestError) as missing:
        client.fine_tuning.jobs.create(training_file="file-0123456789abcdef01234567", model="tiny")
    assert missing.value.body["param"] == "training_file"
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=server.folder / "train.jsonl", purpose="assistants")
    assert purpose.value.body["param"] == "purpose"


def test_dpo_job_on_openai_dpo_records(server):
    """OpenAI's DPO records as uploaded (ftc data convert wrote them from ftc's preference pairs), beta from the request."""
    from ftc.compiler.data.openai import convert_file

    (server.folder / "prefs.jsonl").write_text(_lines(REPO / "specs" / "data" / "ticket_triage_prefs" / "train.jsonl", 8), encoding="utf-8")
    convert_file(server.folder / "prefs.jsonl", "prefs.jsonl", "openai", server.folder / "dpo.jsonl")
    assert '"preferred_output"' in (server.folder / "dpo.jsonl").read_text(encoding="utf-8")
    client = server.client()
    uploaded = client.files.create(file=server.folder / "dpo.jsonl", purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="tiny", method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "learning_rate_multiplier": 2}}})
    job = _wait(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    chosen = job.method.dpo.hyperparameters
    assert (chosen.beta, chosen.n_epochs, chosen.batch_size, chosen.learning_rate_multiplier) == (0.2, 1, 4, 2)
    lock = json.loads(next((server.folder / "state" / "jobs" / job.id / "build").glob("*/ftc.lock.json")).read_text())
    assert lock["method"]["beta"] == 0.2 and lock["training"]["learning_rate"] == pytest.approx(2e-3)
    assert lock["data"]["format"] == "preference"
    metrics = [e for e in client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100).data if e.type == "metrics"]
    assert metrics and all(e.data["total_steps"] == 2 for e in metrics)


def _items(count: int, drop_field_at: int | None = None) -> str:
    """OpenAI reinforcement items from the ticket chats: the ticket as the conversation, its category as a field that
    the grader reads, and a field that no grader reads."""
    lines = []
    for number, line in enumerate(_lines(DATA / "train.jsonl", count).splitlines(), 1):
        chat = json.loads(line)
        item = {"messages": chat["messages"][:-1], "category": json.loads(chat["messages"][-1]["content"])["category"], "ticket_id": number}
        if number == drop_field_at:
            del item["category"]
        lines.append(json.dumps(item) + "\n")
    return "".join(lines)


def test_reinforcement_job_maps_graders_onto_rewards(server):
    client = server.client()
    (server.folder / "rft.jsonl").write_text(_items(8), encoding="utf-8")
    uploaded = client.files.create(file=server.folder / "rft.jsonl", purpose="fine-tune")
    grader = {
        "type": "multi", "name": "triage", "calculate_output": "0.7 * category + 0.3 * polite",
        "graders": {
            "category": {"type": "string_check", "name": "category", "input": "{{sample.output_text}}", "reference": "{{item.category}}", "operation": "eq"},
            "polite": {"type": "string_check", "name": "polite", "input": "{{ sample.output_text }}", "reference": "thank", "operation": "ilike"},
        },
    }
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="tiny", method={"type": "reinforcement", "reinforcement": {"grader": grader}})
    job = _wait(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith("ft:tiny::ftjob-") and job.method.reinforcement.grader.type == "multi"
    spec = tomllib.loads((server.folder / "state" / "jobs" / job.id / "spec.toml").read_text(encoding="utf-8"))
    assert spec["method"]["rewards"] == [
        {"kind": "exact_match", "field": "category", "weight": 0.7},
        {"kind": "regex", "pattern": "(?i)thank", "match": True, "weight": 0.3},
    ]
    events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100).data
    rewarded = [e for e in events if e.type == "metrics" and "reward" in e.data]
    assert rewarded and "rewards/exact_match_category/mean" in rewarded[0].data
    assert any("left out of the training records: ticket_id (8 items)" in e.message for e in events)

    (server.folder / "rft-bad.jsonl").write_text(_items(4, drop_field_at=3), encoding="utf-8")
    bad = client.files.create(file=server.folder / "rft-bad.jsonl", purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=bad.id, model="tiny", method={"type": "reinforcement", "reinforcement": {"grader": grader}})
    job = _wait(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "failed" and f"{bad.id} line 3: the item has no field 'category'" in job.error.message


def test_deprecated_hyperparameters_are_accepted_and_cancel_stops_a_running_job(server):
    client = server.client()
    uploaded = client.files.create(file=server.folder / "long.jsonl", purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="tiny", hyperparameters={"n_epochs": 3, "batch_size": 2})
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == 2
    _wait_for_event(client, job.id, "training loss=")  # running, and past its first step
    client.fine_tuning.jobs.cancel(job.id)
    job = _wait(client, job.id, ("cancelled", "failed", "succeeded"), timeout=300)
    assert job.status == "cancelled", job.error
    assert job.method.supervised.hyperparameters.n_epochs == 3  # 64 examples, 32 steps an epoch
    assert job.fine_tuned_model is None
    _wait_for_event(client, job.id, "Fine-tuning job cancelled at step")
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)


def test_pause_and_resume(server):
    client = server.client()
    uploaded = client.files.create(file=server.folder / "long.jsonl", purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="tiny", method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8, "n_epochs": 2}}})
    _wait_for_event(client, job.id, "Checkpoint created at step 1")  # of 16
    client.fine_tuning.jobs.pause(job.id)
    job = _wait(client, job.id, ("paused", "failed", "succeeded"), timeout=300)
    assert job.status == "paused", job.error
    client.fine_tuning.jobs.resume(job.id)
    job = _wait(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    _wait_for_event(client, job.id, "resumed from its last sealed checkpoint")


def test_kill_9_while_running_then_restart_completes_the_job(server):
    client = server.client()
    uploaded = client.files.create(file=server.folder / "long.jsonl", purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="tiny", method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4, "n_epochs": 3}}})
    _wait_for_event(client, job.id, "Checkpoint created at step 1")  # of 48
    os.kill(server.process.pid, signal.SIGKILL)  # the server alone, as the OOM killer would
    server.process.wait(timeout=30)
    server.start()
    client = server.client()
    job = _wait(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=1000).data]
    assert any("ftc api restarted" in m for m in messages)
    run = json.loads(next((server.folder / "state" / "jobs" / job.id / "runs").glob("*/*/run.json")).read_text())
    assert run["status"] == "completed" and any(s["resumed"] for s in run["sessions"])
