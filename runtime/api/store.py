"""`ftc api`'s state on disk, so that a killed and restarted server loses nothing:

    STATE/files/<file-id>.json      the file object (OpenAI's shape)
    STATE/files/<file-id>.data      the bytes as uploaded
    STATE/jobs/<job-id>/job.json    the job object, and under "_ftc" what the server needs to go on with it
    STATE/jobs/<job-id>/job-events.jsonl       the job's events, oldest first
    STATE/jobs/<job-id>/job-checkpoints.jsonl  its sealed checkpoints, oldest first
    STATE/jobs/<job-id>/            the job's project: spec.toml, its data, build/, runs/, logs/ (a log per command)

Every JSON file is replaced whole (ftc.compiler.atomic); the JSONL files are appended a line at a time, and a line
cut short by a kill is skipped when read. Ids are random (secrets), so no client can guess another's.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from ftc.compiler.atomic import write_atomic
from ftc.runtime.runfolder import read_jsonl

FILE_PREFIX, JOB_PREFIX, EVENT_PREFIX, CHECKPOINT_PREFIX = "file-", "ftjob-", "ftevent-", "ftckpt-"
PRIVATE = "_ftc"  # the job object's own fields, never sent to clients
JOB, JOB_EVENTS, JOB_CHECKPOINTS = "job.json", "job-events.jsonl", "job-checkpoints.jsonl"
LOGS = "logs"  # a job folder's logs: one per command it ran


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def now() -> int:
    return int(time.time())


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files_dir, self.jobs_dir = root / "files", root / "jobs"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # ---- files ----------------------------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.data"

    def add_file(self, file_id: str, filename: str, purpose: str, size: int) -> dict[str, Any]:
        meta = {
            "id": file_id, "object": "file", "bytes": size, "created_at": now(), "filename": filename,
            "purpose": purpose, "status": "processed", "expires_at": None, "status_details": None,
        }
        write_atomic(self.files_dir / f"{file_id}.json", json.dumps(meta, sort_keys=True) + "\n")
        return meta

    def file(self, file_id: str) -> dict[str, Any] | None:
        if not file_id.startswith(FILE_PREFIX) or not file_id[len(FILE_PREFIX):].isalnum():
            return None
        path = self.files_dir / f"{file_id}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def files(self) -> list[dict[str, Any]]:
        found = [json.loads(p.read_text(encoding="utf-8")) for p in self.files_dir.glob("*.json")]
        return sorted(found, key=lambda f: (f["created_at"], f["id"]), reverse=True)

    def delete_file(self, file_id: str) -> bool:
        with self.lock:
            if self.file(file_id) is None:
                return False
            self.file_path(file_id).unlink(missing_ok=True)
            (self.files_dir / f"{file_id}.json").unlink()
            return True

    # ---- jobs -----------------------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def job(self, job_id: str) -> dict[str, Any] | None:
        if not job_id.startswith(JOB_PREFIX) or not job_id[len(JOB_PREFIX):].isalnum():
            return None
        path = self.job_dir(job_id) / JOB
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def jobs(self) -> list[dict[str, Any]]:
        """Every job, oldest first (the order jobs run in)."""
        found = [json.loads(p.read_text(encoding="utf-8")) for p in self.jobs_dir.glob(f"*/{JOB}")]
        return sorted(found, key=lambda j: (j[PRIVATE]["sequence"], j["id"]))

    def save_job(self, job: dict[str, Any]) -> None:
        folder = self.job_dir(job["id"])
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / JOB, json.dumps(job, sort_keys=True, indent=1) + "\n")

    def update_job(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a job (PRIVATE's own keys are merged) and save it, under the store's lock."""
        with self.lock:
            job = self.job(job_id)
            assert job is not None, job_id
            private = fields.pop(PRIVATE, {})
            job.update(fields)
            job[PRIVATE].update(private)
            self.save_job(job)
            return job

    def next_sequence(self) -> int:
        return max((j[PRIVATE]["sequence"] for j in self.jobs()), default=0) + 1

    # ---- events and checkpoints -----------------------------------------------------------------------------

    def add_event(self, job_id: str, message: str, level: str = "info", data: dict[str, Any] | None = None, kind: str = "message") -> dict[str, Any]:
        event = {
            "id": new_id(EVENT_PREFIX), "object": "fine_tuning.job.event", "created_at": now(), "level": level,
            "message": message, "data": data or {}, "type": kind,
        }
        with self.lock, (self.job_dir(job_id) / JOB_EVENTS).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, sort_keys=True) + "\n")
        return event

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return read_jsonl(self.job_dir(job_id) / JOB_EVENTS)

    def add_checkpoint(self, job_id: str, checkpoint: dict[str, Any]) -> None:
        with self.lock, (self.job_dir(job_id) / JOB_CHECKPOINTS).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(checkpoint, sort_keys=True) + "\n")

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return read_jsonl(self.job_dir(job_id) / JOB_CHECKPOINTS)


def public(job: dict[str, Any]) -> dict[str, Any]:
    """The job object as clients see it."""
    return {k: v for k, v in job.items() if k != PRIVATE}


def page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """OpenAI's cursor pagination: the items after the one whose id is `after`, at most `limit` of them."""
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}
