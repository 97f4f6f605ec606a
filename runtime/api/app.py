"""`ftc api`'s HTTP surface (FastAPI): OpenAI's files, fine-tuning jobs and models endpoints, and its chat and
completions endpoints for the tuned models, at one base URL, so that code written against OpenAI's fine-tuning API
runs with only `base_url` (and the model name) changed.

Every /v1 route wants `Authorization: Bearer KEY` when the server has a key (401 otherwise). Errors have OpenAI's
shape, {"error": {"message", "type", "param", "code"}}, with the matching HTTP status.
"""

from __future__ import annotations

import hmac
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from ftc.runtime.api.config import ApiConfig
from ftc.runtime.api.jobs import create_job
from ftc.runtime.api.requests import RequestProblem, parse_job_request
from ftc.runtime.api.runner import FINISHED, Runner
from ftc.runtime.api.serving import NotServed, Serving
from ftc.runtime.api.store import FILE_PREFIX, PRIVATE, Store, new_id, page, public

MAX_UPLOAD = 2 * 2**30  # bytes of one uploaded file
PURPOSES = ("fine-tune",)
ERROR_TYPES = {401: "authentication_error", 404: "invalid_request_error", 409: "invalid_request_error", 500: "server_error", 503: "server_error"}
UPSTREAM_TIMEOUT = httpx.Timeout(3600, connect=10)


def error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = ERROR_TYPES.get(status, "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def create_app(config: ApiConfig, key: str | None) -> FastAPI:
    store = Store(config.state)
    serving = Serving(store, config)
    runner = Runner(store, config, serving.gate)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        serving.start()
        runner.start()
        yield
        runner.stop()
        await run_in_threadpool(serving.close)

    # no /docs or /openapi.json: the API is OpenAI's, documented there; nothing answers without the key but /health
    app = FastAPI(title="ftc api", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.runner, app.state.serving = store, runner, serving

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if key is not None and request.url.path.startswith("/v1"):
            sent = request.headers.get("authorization", "")
            scheme, _, given = sent.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
                return error(401, "Incorrect API key provided: send the key in Authorization: Bearer ...", code="invalid_api_key")
        return await call_next(request)

    @app.exception_handler(RequestProblem)
    async def refused(request: Request, exc: RequestProblem):
        return error(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:])
        return error(400, f"{where}: {first['msg']}", where or None)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception):
        return error(500, f"ftc api failed on this request: {type(exc).__name__}: {exc}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # ---- files --------------------------------------------------------------------------------------------------

    @app.post("/v1/files")
    async def upload(file: UploadFile = File(...), purpose: str = Form(...)):
        if purpose not in PURPOSES:
            raise RequestProblem(f"purpose {purpose!r} is not supported: ftc api takes files for fine-tuning (purpose=\"fine-tune\")", "purpose")
        file_id = new_id(FILE_PREFIX)
        size = await run_in_threadpool(_save_upload, file, store.file_path(file_id))
        return store.add_file(file_id, Path(file.filename or "upload.jsonl").name, purpose, size)

    @app.get("/v1/files")
    def list_files(purpose: str | None = None, limit: int = 10000, after: str | None = None, order: str = "desc"):
        files = [f for f in store.files() if purpose is None or f["purpose"] == purpose]
        return page(files if order == "desc" else files[::-1], after, max(1, min(limit, 10000)))

    @app.get("/v1/files/{file_id}")
    def get_file(file_id: str):
        return _file_or_404(store, file_id)

    @app.get("/v1/files/{file_id}/content")
    def file_content(file_id: str):
        meta = _file_or_404(store, file_id)
        return FileResponse(store.file_path(file_id), filename=meta["filename"], media_type="application/octet-stream")

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str):
        _file_or_404(store, file_id)
        store.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # ---- fine-tuning jobs ---------------------------------------------------------------------------------------

    @app.post("/v1/fine_tuning/jobs")
    async def create(request: Request):
        body = await _json_body(request)
        job = await run_in_threadpool(create_job, store, config, parse_job_request(body))
        runner.wake.set()
        return public(job)

    @app.get("/v1/fine_tuning/jobs")
    def list_jobs(request: Request, after: str | None = None, limit: int = 20):
        wanted = {k[len("metadata["):-1]: v for k, v in request.query_params.items() if k.startswith("metadata[") and k.endswith("]")}
        jobs = [public(j) for j in reversed(store.jobs()) if all((j.get("metadata") or {}).get(k) == v for k, v in wanted.items())]
        return page(jobs, after, max(1, min(limit, 100)))

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    def get_job(job_id: str):
        return public(_job_or_404(store, job_id))

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel(job_id: str):
        job = _job_or_404(store, job_id)
        if job["status"] in FINISHED:
            raise RequestProblem(f"Job {job_id} has already {job['status']}: it cannot be cancelled", code="job_finished")
        return public(runner.request_stop(job_id, "cancel"))

    @app.post("/v1/fine_tuning/jobs/{job_id}/pause")
    def pause(job_id: str):
        job = _job_or_404(store, job_id)
        if job["status"] not in ("validating_files", "queued", "running"):
            raise RequestProblem(f"Job {job_id} is {job['status']}: only a job that waits or runs can be paused", code="job_not_running")
        return public(runner.request_stop(job_id, "pause"))

    @app.post("/v1/fine_tuning/jobs/{job_id}/resume")
    def resume(job_id: str):
        job = _job_or_404(store, job_id)
        if job["status"] != "paused":
            raise RequestProblem(f"Job {job_id} is {job['status']}, not paused", code="job_not_paused")
        return public(runner.resume(job_id))

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    def events(job_id: str, after: str | None = None, limit: int = 20):
        _job_or_404(store, job_id)
        return page(store.events(job_id)[::-1], after, max(1, min(limit, 1000)))

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def checkpoints(job_id: str, after: str | None = None, limit: int = 10):
        _job_or_404(store, job_id)
        return page(store.checkpoints(job_id)[::-1], after, max(1, min(limit, 100)))

    # ---- models and inference -----------------------------------------------------------------------------------

    def models() -> list[dict[str, Any]]:
        bases = [{"id": name, "object": "model", "created": 0, "owned_by": "ftc"} for name in sorted(config.models)]
        tuned = [
            {"id": j["fine_tuned_model"], "object": "model", "created": j["finished_at"], "owned_by": "ftc", "parent": j["model"], "max_model_len": j[PRIVATE].get("max_model_len")}
            for j in serving.listed()
        ]
        return bases + tuned

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": models()}

    @app.get("/v1/models/{model:path}")
    def get_model(model: str):
        found = next((m for m in models() if m["id"] == model), None)
        if found is None:
            return error(404, f"The model `{model}` does not exist or is not served yet (it is listed once its parity gate passes)", "model", "model_not_found")
        return found

    async def forward(request: Request, endpoint: str):
        raw = await request.body()
        body = await _json_body(request)
        model = body.get("model")
        if not isinstance(model, str) or not model.startswith("ft:"):
            hint = f"the base models ({', '.join(sorted(config.models))}) are for fine-tuning jobs; ask a fine-tuned model (ft:...) listed by /v1/models"
            return error(404, f"The model `{model}` is not served here: {hint}", "model", "model_not_found")
        try:
            upstream = await run_in_threadpool(serving.upstream, model)
        except NotServed as exc:
            return error(exc.status, exc.message, "model", "model_not_found" if exc.status == 404 else "model_not_ready")
        client = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT)
        sent = client.build_request(
            "POST", upstream.url + endpoint, content=raw,
            headers={"Authorization": f"Bearer {upstream.key}", "Content-Type": "application/json"},
        )
        response = await client.send(sent, stream=True)
        return StreamingResponse(
            response.aiter_raw(), status_code=response.status_code,
            media_type=response.headers.get("content-type"), background=BackgroundTask(_close, response, client),
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await forward(request, "/v1/chat/completions")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await forward(request, "/v1/completions")

    return app


async def _close(response: httpx.Response, client: httpx.AsyncClient) -> None:
    await response.aclose()
    await client.aclose()


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise RequestProblem("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise RequestProblem("the request body must be a JSON object")
    return body


def _save_upload(upload: UploadFile, path: Path) -> int:
    """Copy an upload to the store in blocks; refuse one over MAX_UPLOAD without keeping any of it."""
    size = 0
    with path.open("wb") as fh:
        while block := upload.file.read(2**20):
            size += len(block)
            if size > MAX_UPLOAD:
                fh.close()
                path.unlink()
                raise RequestProblem(f"the file is larger than {MAX_UPLOAD // 2**30} GiB", "file", 413)
            fh.write(block)
    return size


def _file_or_404(store: Store, file_id: str) -> dict[str, Any]:
    meta = store.file(file_id)
    if meta is None:
        raise RequestProblem(f"No such File object: {file_id}", "id", 404, "file_not_found")
    return meta


def _job_or_404(store: Store, job_id: str) -> dict[str, Any]:
    job = store.job(job_id)
    if job is None:
        raise RequestProblem(f"No fine-tuning job found with id {job_id}", "id", 404, "fine_tune_not_found")
    return job

