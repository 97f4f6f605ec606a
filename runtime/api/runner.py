"""The jobs' worker: one thread that takes jobs in the order they were created and runs each through ftc's own
commands, in the job's folder, one at a time (one device):

    validating_files   `ftc data check` (every bad line, as `ftc data check` names it) and `ftc compile`; the
                       planner's choices go into the job's hyperparameters; then queued
    running            `ftc run` (or `ftc run --resume RUN` after a pause or a restart), its events turned into
                       the job's events and checkpoints as they are written; then `ftc merge` (the merged weights
                       verified against the adapter's logits) and `ftc report`
    succeeded          the spec, lock and report become result files; the model goes to serving.py, which lists
                       it once vLLM passes the parity gate

Cancel and pause send SIGTERM to `ftc run`, which asks the script for a sealed checkpoint at the end of the step it
is in; a paused job resumes from it. Each command is a child process that gets SIGTERM if the server dies
(PR_SET_PDEATHSIG), so a killed server leaves a run that seals its step and stops; on the next start, a job that
was running waits for that process to end and resumes from the last sealed checkpoint (a run that sealed none
starts again). Nothing is lost: the state is on disk (store.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftc.compiler.atomic import is_alive
from ftc.runtime.api.config import ApiConfig
from ftc.runtime.api.jobs import SPEC, TRAIN, VALIDATION, fine_tuned_name, resolved_hyperparameters
from ftc.runtime.api.store import FILE_PREFIX, LOGS, PRIVATE, Store, new_id, now
from ftc.runtime.runfolder import CHECKPOINTS, LOCK, REPORT, RunFolderError, read_events, read_record, run_folders
from ftc.runtime.serve.vllm import parent_death_signal

POLL = 1.0  # seconds between looks at a running job
EXIT_INTERRUPTED = 130  # `ftc run` stopped at a sealed checkpoint when asked to
EXIT_REFUSED = 2
STOP_WAIT = 600  # seconds a run left by a killed server may take to seal its step
FINISHED = ("succeeded", "failed", "cancelled")


def ftc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ftc.cli", *args]


class Runner(threading.Thread):
    def __init__(self, store: Store, config: ApiConfig, on_success: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(name="ftc-api-jobs", daemon=True)
        self.store, self.config, self.on_success = store, config, on_success
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.current: subprocess.Popen | None = None  # the command running for current_job
        self.current_job: str | None = None  # the job being validated or trained
        self.training = False  # whether `current` is `ftc run`, which stops at the end of its step on SIGTERM

    # ---- the loop -------------------------------------------------------------------------------------------

    def run(self) -> None:
        self._recover()
        while not self.stopping.is_set():
            with self.store.lock:  # request_stop decides under the same lock whether the job is being worked on
                job = self._next()
                self.current_job = job["id"] if job is not None else None
            if job is None:
                self.wake.wait(POLL)
                self.wake.clear()
                continue
            try:
                if job["status"] == "validating_files":
                    self._validate(job)
                else:
                    self._train(job)
            except Exception as exc:  # a bug of ours must not stop every later job
                self._fail(job["id"], "internal_error", f"ftc api could not go on with this job: {type(exc).__name__}: {exc}")
            finally:
                self.current_job = None

    def _next(self) -> dict[str, Any] | None:
        jobs = self.store.jobs()
        for status in ("validating_files", "queued"):
            for job in jobs:
                if job["status"] == status:
                    return job
        return None

    def stop(self) -> None:
        """Stop taking jobs; a running `ftc run` is left to seal its step (it resumes on the next start)."""
        self.stopping.set()
        self.wake.set()

    def _recover(self) -> None:
        """After a restart: a job that was running waits for its old process and goes back to the queue's head."""
        for job in self.store.jobs():
            if job["status"] != "running":
                continue
            pid = job[PRIVATE].get("pid")
            deadline = time.monotonic() + STOP_WAIT
            while pid and is_alive(pid) and time.monotonic() < deadline:
                time.sleep(POLL)
            if pid and is_alive(pid):
                os.kill(pid, signal.SIGKILL)
            self.store.update_job(job["id"], status="queued", **{PRIVATE: {"resume": True, "pid": None}})
            self.store.add_event(job["id"], "ftc api restarted: the job resumes from its last sealed checkpoint")

    # ---- requests from the API ------------------------------------------------------------------------------

    def request_stop(self, job_id: str, why: str) -> dict[str, Any]:
        """Cancel ("cancel") or pause ("pause") a job: at once when it waits; when it is being worked on, once the
        step it is on (`ftc run` seals a checkpoint at its end) or the command it is in is done."""
        with self.store.lock:
            job = self.store.job(job_id)
            if job["status"] in ("validating_files", "queued", "paused") and job_id != self.current_job:
                self._stopped_now(job_id, why)
                return self.store.job(job_id)
            job = self.store.update_job(job_id, **{PRIVATE: {"stop": why}})
        process = self.current
        if self.current_job == job_id and self.training and process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return job

    def _stopped_now(self, job_id: str, why: str, step: int | None = None) -> None:
        status = "cancelled" if why == "cancel" else "paused"
        self.store.update_job(job_id, status=status, finished_at=now() if why == "cancel" else None, **{PRIVATE: {"stop": None, "pid": None}})
        self.store.add_event(job_id, f"Fine-tuning job {status}" + (f" at step {step}" if step is not None else ""))

    def resume(self, job_id: str) -> dict[str, Any]:
        """A paused job goes back to the queue: validated jobs go on from their last sealed checkpoint."""
        with self.store.lock:
            validated = self.store.job(job_id)[PRIVATE].get("validated")
            job = self.store.update_job(job_id, status="queued" if validated else "validating_files", **{PRIVATE: {"resume": True, "stop": None}})
        self.store.add_event(job_id, "Fine-tuning job resumed" + (": it goes on from its last sealed checkpoint" if validated else ""))
        self.wake.set()
        return job

    # ---- stages ---------------------------------------------------------------------------------------------

    def _command(self, job_id: str, log: str, *args: str) -> subprocess.Popen:
        folder = self.store.job_dir(job_id)
        (folder / LOGS).mkdir(exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with (folder / LOGS / log).open("ab") as fh:
            return subprocess.Popen(
                ftc_command(*args), cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                preexec_fn=parent_death_signal(),
            )

    def _call(self, job_id: str, log: str, *args: str) -> tuple[int, str]:
        process = self._command(job_id, log, *args)
        self.current = process
        code = process.wait()
        self.current = None
        return code, self._tail(job_id, log)

    def _tail(self, job_id: str, log: str, lines: int = 30) -> str:
        path = self.store.job_dir(job_id) / LOGS / log
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _validate(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        folder = self.store.job_dir(job_id)
        (folder / LOGS).mkdir(exist_ok=True)
        missing = job[PRIVATE].get("missing_reference")
        if missing:
            file_id = job["training_file"] if TRAIN in missing["lines"] else job["validation_file"]
            lines = missing["lines"].get(TRAIN) or missing["lines"][VALIDATION]
            shown = ", ".join(map(str, lines[:10])) + (f" and {len(lines) - 10} more" if len(lines) > 10 else "")
            self._fail(job_id, "invalid_training_file", f"{file_id} line {shown}: the item has no field {missing['field']!r}, which the grader reads as {{{{item.{missing['field']}}}}}", "training_file" if file_id == job["training_file"] else "validation_file")
            return
        checked = subprocess.run(ftc_command("data", "check", SPEC, "--json"), cwd=folder, capture_output=True, text=True, check=False, preexec_fn=parent_death_signal())
        (folder / LOGS / "data-check.json").write_text(checked.stdout + checked.stderr, encoding="utf-8")
        problems = _data_errors(checked.stdout)
        if checked.returncode != 0 or problems:
            names = {"train.jsonl": job["training_file"], "validation.jsonl": job["validation_file"]}
            shown = [_name_file(p, names) for p in problems] or [checked.stderr.strip().splitlines()[-1] if checked.stderr.strip() else "ftc data check failed"]
            more = f" (and {len(shown) - 5} more)" if len(shown) > 5 else ""
            param = "validation_file" if shown[0].startswith(str(job["validation_file"])) and job["validation_file"] else "training_file"
            self._fail(job_id, "invalid_training_file", "The file has problems: " + "; ".join(shown[:5]) + more, param)
            return
        if self._stopped(job_id):
            return
        code, tail = self._call(job_id, "compile.log", "compile", SPEC)
        if self._stopped(job_id):
            return
        if code != 0:
            self._fail(job_id, "invalid_training_file" if code == 1 else "internal_error", f"ftc compile refused the job:\n{tail}")
            return
        lock = json.loads((self._build(job_id) / LOCK).read_text(encoding="utf-8"))
        template = self.config.spec_for(job["model"], job["method"]["type"])
        chosen = resolved_hyperparameters(lock, template, job["method"]["type"])
        kind = job["method"]["type"]
        self.store.update_job(
            job_id, status="queued",
            hyperparameters={k: chosen[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
            method={**job["method"], kind: {**job["method"][kind], "hyperparameters": chosen}},
            **{PRIVATE: {"max_steps": lock["training"]["max_steps"], "validated": True}},
        )
        self.store.add_event(job_id, "Files validated, moving job to queued state")

    def _build(self, job_id: str) -> Path:
        return self.store.job_dir(job_id) / "build" / job_id

    def _stopped(self, job_id: str, step: int | None = None) -> bool:
        """Whether a cancel or pause came while the job was worked on; if so, the job is now cancelled or paused."""
        why = self.store.job(job_id)[PRIVATE].get("stop")
        if why is not None:
            self._stopped_now(job_id, why, step)
        return why is not None

    def _train(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        folder = self.store.job_dir(job_id)
        resume = job[PRIVATE].get("resume") and job[PRIVATE].get("run_dir")
        if resume and _status(folder / resume) == "completed":  # stopped after training, while merging
            job = self.store.update_job(job_id, status="running", **{PRIVATE: {"resume": False}})
            tail = Tail(self.store, job_id)
            tail.read(job)  # the tokens trained, from the events already read
            self._finish(job_id, tail)
            return
        if resume and not any((folder / resume / CHECKPOINTS).glob("checkpoint-*")):
            resume = None
        self.store.update_job(job_id, status="running", **{PRIVATE: {"resume": False}})
        self.store.add_event(job_id, "Fine-tuning job resumed from its last sealed checkpoint" if resume else "Fine-tuning job started")
        args = ("run", SPEC, *(("--resume", job[PRIVATE]["run_dir"]) if resume else ()))
        before = {p.name for p in run_folders(folder, job_id)}
        process = self._command(job_id, "run.log", *args)
        self.current, self.training = process, True
        if self.store.job(job_id)[PRIVATE].get("stop"):  # asked while the run was starting
            process.send_signal(signal.SIGTERM)
        self.store.update_job(job_id, **{PRIVATE: {"pid": process.pid}})
        tail = Tail(self.store, job_id)
        known = bool(resume)  # a resumed run goes on in its folder; a new one makes its own
        while process.poll() is None:
            if not known:
                new = [p for p in run_folders(folder, job_id) if p.name not in before]
                if new:
                    job = self.store.update_job(job_id, **{PRIVATE: {"run_dir": str(new[-1].relative_to(folder)), "events_read": 0}})
                    known = True
            tail.read(job)
            time.sleep(POLL)
        self.current, self.training = None, False
        job = self.store.job(job_id)
        tail.read(job)
        code = process.returncode
        if self.stopping.is_set() and code != 0:
            return  # the server is stopping: the job resumes on the next start
        if code in (0, EXIT_INTERRUPTED) and self._stopped(job_id, tail.step):
            return
        if code != 0:
            self._fail(job_id, "training_failed", f"ftc run stopped with exit status {code}:\n{self._tail(job_id, 'run.log')}")
            return
        self._finish(job_id, tail)

    def _finish(self, job_id: str, tail: Tail) -> None:
        job = self.store.job(job_id)
        run_dir = job[PRIVATE]["run_dir"]
        code, out = self._call(job_id, "merge.log", "merge", run_dir)
        if self._stopped(job_id):
            return
        if code != 0:
            self._fail(job_id, "merge_failed", f"ftc merge did not verify the merged model:\n{out}")
            return
        self.store.add_event(job_id, "Merged weights verified against the trained adapter: " + out.splitlines()[0][:300] if out else "Merged weights written")
        code, out = self._call(job_id, "report.log", "report", run_dir)
        folder = self.store.job_dir(job_id)
        results = [(SPEC, folder / SPEC), (LOCK, folder / run_dir / LOCK)]
        if code == 0 and (folder / run_dir / REPORT).is_file():
            results.append((REPORT, folder / run_dir / REPORT))
        else:
            self.store.add_event(job_id, f"ftc report failed: {out[-300:]}", level="warn")
        result_ids = [self._result_file(job_id, name, path) for name, path in results]
        name = fine_tuned_name(job["model"], job[PRIVATE]["suffix"], job_id)
        job = self.store.update_job(
            job_id, status="succeeded", finished_at=now(), fine_tuned_model=name, result_files=result_ids,
            trained_tokens=tail.tokens, **{PRIVATE: {"pid": None}},
        )
        self.store.add_event(job_id, f"New fine-tuned model created: {name}")
        self.store.add_event(job_id, "The job has successfully completed")
        self.on_success(job)

    def _result_file(self, job_id: str, name: str, path: Path) -> str:
        file_id = new_id(FILE_PREFIX)
        self.store.file_path(file_id).write_bytes(path.read_bytes())
        self.store.add_file(file_id, f"{job_id}-{name}", "fine-tune-results", path.stat().st_size)
        return file_id

    def _fail(self, job_id: str, code: str, message: str, param: str | None = None) -> None:
        self.store.update_job(job_id, status="failed", finished_at=now(), error={"code": code, "message": message, "param": param}, **{PRIVATE: {"pid": None}})
        self.store.add_event(job_id, message, level="error")


class Tail:
    """Turns a run's events.jsonl into the job's metrics events and checkpoints, each line once (the count of lines
    read is kept in the job, so a restart does not repeat them)."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self.step, self.tokens = 0, None
        self.position: int | None = None
        self.train_loss: float | None = None
        self.valid_loss: float | None = None

    def read(self, job: dict[str, Any]) -> None:
        run_dir = job[PRIVATE].get("run_dir")
        if run_dir is None:
            return
        events = read_events(self.store.job_dir(self.job_id) / run_dir)
        total = job[PRIVATE].get("max_steps")
        if self.position is None:  # the events read before this session (a restart): only their losses and step
            self.position = job[PRIVATE].get("events_read", 0)
            for event in events[: self.position]:
                self._note(event)
        seen, self.position = self.position, max(self.position, len(events))
        for event in events[seen:]:
            self._note(event)
            kind = event.get("event")
            if kind == "log" and "loss" in event:
                data = {"step": event["step"], "train_loss": event["loss"], "total_steps": total}
                if "mean_token_accuracy" in event:
                    data["train_mean_token_accuracy"] = event["mean_token_accuracy"]
                if "reward" in event:  # GRPO and RLOO: the weighted sum of the rewards, and each one
                    data.update({k: v for k, v in event.items() if k == "reward" or k.startswith("rewards/")})
                reward = f", reward={event['reward']:.4f}" if "reward" in event else ""
                self.store.add_event(self.job_id, f"Step {event['step']}/{total}: training loss={event['loss']:.4f}{reward}", data=data, kind="metrics")
            elif kind == "log" and "eval_loss" in event:
                data = {"step": event["step"], "valid_loss": event["eval_loss"], "total_steps": total}
                self.store.add_event(self.job_id, f"Step {event['step']}/{total}: validation loss={event['eval_loss']:.4f}", data=data, kind="metrics")
            elif kind == "checkpoint":
                self._checkpoint(job, event)
        if len(events) > seen:
            self.store.update_job(self.job_id, **{PRIVATE: {"events_read": len(events)}})

    def _note(self, event: dict[str, Any]) -> None:
        self.step = event.get("step", self.step) or self.step
        if event.get("event") == "log":
            self.train_loss = event.get("loss", self.train_loss)
            self.valid_loss = event.get("eval_loss", self.valid_loss)
        if event.get("event") == "end":
            self.tokens = event.get("tokens")

    def _checkpoint(self, job: dict[str, Any], event: dict[str, Any]) -> None:
        step = event["step"]
        name = fine_tuned_name(job["model"], job[PRIVATE]["suffix"], self.job_id)
        metrics = {"step": float(step), "train_loss": self.train_loss, "valid_loss": self.valid_loss}
        self.store.add_checkpoint(self.job_id, {
            "id": new_id("ftckpt-"), "object": "fine_tuning.job.checkpoint", "created_at": now(),
            "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{step}", "fine_tuning_job_id": self.job_id,
            "metrics": {k: v for k, v in metrics.items() if v is not None}, "step_number": step,
        })
        self.store.add_event(self.job_id, f"Checkpoint created at step {step}")


def _status(run_dir: Path) -> str | None:
    try:
        return read_record(run_dir).status
    except RunFolderError:
        return None


def _data_errors(stdout: str) -> list[str]:
    try:
        return list(json.loads(stdout).get("errors", []))
    except ValueError:
        return []


def _name_file(problem: str, names: dict[str, str | None]) -> str:
    """`train.jsonl:4: ...` -> `file-abc line 4: ...`, as OpenAI's errors name lines of the uploaded file."""
    for local, file_id in names.items():
        if file_id and problem.startswith(local + ":"):
            line, _, rest = problem[len(local) + 1:].partition(":")
            return f"{file_id} line {line}:{rest}" if line.isdigit() else f"{file_id}: {problem[len(local) + 1:]}"
    return problem
