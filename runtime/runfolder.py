"""The run folder: its layout, its typed records, and which run a spec means.

A run folder (runs/<name>/<run-id>/) holds, each name defined here once:
  ftc.lock.json   LOCK: a copy of the plan that ran (the run is self-describing even after the build changes)
  run.json        RUN_RECORD (`RunRecord`): written when the run starts (with its lineage: `Parent`, the data's
                  sha256; runtime/lineage.py), updated when each session ends, by
                  `ftc merge` ("merge": `MergeCheck`) and by `ftc serve` ("serve": `Serving`, one
                  `ParityCheck` per mode)
  events.jsonl    EVENTS: what the training script reported, one JSON object per line (logs, checkpoints, end)
  train.log       TRAIN_LOG: everything the script printed
  checkpoints/    CHECKPOINTS: sealed checkpoints (checkpoint-N/ftc-checkpoint.json marks a complete one)
  logs/           LOGS: TensorBoard (or other trackers') logs
  final/          FINAL: the adapter or the full model, with the tokenizer and the locked chat template
                  (CHAT_TEMPLATE_NAME, the compiler's)
  base-dequantized/        DEQUANTIZED_BASE: a GGUF base unpacked to dense weights (QLoRA on a GGUF base)
  merged/         MERGED: after `ftc merge`, the merged model, ready for vLLM; a merge that failed verification
                  is kept as merged.rejected/ (MERGE_REJECTED) and built in .merged.tmp-<pid>/ (MERGE_TMP_PREFIX)
  base-qlora-dequantized/  QLORA_BASE: `ftc serve --adapter` of a QLoRA run, the 4-bit base dequantized for vLLM
  samples.json    SAMPLES: base versus tuned answers to a few held-out prompts, written at the end of `ftc run`
  eval.json       EVAL (`EvalRecord`): after `ftc eval`, metrics base versus tuned, lm-eval, gates, diagnosis,
                  every answer
  eval-endpoint.json  EVAL_ENDPOINT (`EvalRecord`): after `ftc eval --endpoint URL`, the same, with the tuned
                  side as the server answers
  eval/lm_eval/   LM_EVAL_TASK: the local lm-eval task `ftc eval` writes from the held-out split
  report.html     REPORT: after `ftc report`, one self-contained page with plots
  serve.log       SERVE_LOG: what vLLM printed under `ftc serve`
  against.json    AGAINST (`AgainstRecord`): after `ftc eval RUN --against CHAMPION`, both runs' scores on this
                  run's held-out examples, the deltas, the regression gate's verdict, every answer
  exports/        EXPORTS: after `ftc export`, one folder per format that passed its gate ("exports": `ExportCheck`);
                  one that failed is kept as exports/<format>.rejected/

Beside the run folders, runs/<name>/promoted.json (PROMOTED, `PromotedRecord`) names the run `ftc promote` made
current, with its history (runtime/promote.py).

Run folders live under <root>/runs/<name>/ (`runs_folder`); `newest_run` finds a spec's newest one through
the spec loader. The generated scripts write some of these names themselves (events.jsonl, final/,
checkpoints/): they run without ftc, so templates/run_support.py keeps its own literals.

The records are frozen pydantic models that refuse unknown keys. Every field a newer ftc added is optional,
so that a run folder written by an older ftc still reads, and a record is written back with the keys it was
given only (`exclude_unset`): the JSON on disk keeps its shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from ftc.compiler.build.compile import CHAT_TEMPLATE_NAME  # final/ and merged/ hold the locked template under it
from ftc.compiler.atomic import is_alive, write_atomic
from ftc.compiler.build.lock import LOCK_NAME, LockError, read_lock
from ftc.compiler.diagnostics import errors
from ftc.compiler.plan.model import Lock
from ftc.compiler.spec.validate import parse
from ftc.runtime.records import EvalRecord, RecordModel, updated

# ---- the layout -----------------------------------------------------------------------------------------

RUNS = "runs"  # <root>/runs/<name>/<run-id>/
LOCK = LOCK_NAME
RUN_RECORD = "run.json"
EVENTS = "events.jsonl"
TRAIN_LOG = "train.log"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
FINAL = "final"
DEQUANTIZED_BASE = "base-dequantized"
MERGED = "merged"
MERGE_REJECTED = "merged.rejected"
MERGE_TMP_PREFIX = ".merged.tmp-"
QLORA_BASE = "base-qlora-dequantized"
SAMPLES = "samples.json"
EVAL = "eval.json"
EVAL_ENDPOINT = "eval-endpoint.json"
LM_EVAL_TASK = Path("eval") / "lm_eval"
REPORT = "report.html"
SERVE_LOG = "serve.log"
EXPORTS = "exports"
AGAINST = "against.json"  # `ftc eval RUN --against CHAMPION`: this run (the challenger) against a champion run
NAMES = (
    LOCK, RUN_RECORD, EVENTS, TRAIN_LOG, CHECKPOINTS, LOGS, FINAL, CHAT_TEMPLATE_NAME, DEQUANTIZED_BASE, MERGED,
    MERGE_REJECTED, QLORA_BASE, SAMPLES, EVAL, EVAL_ENDPOINT, str(LM_EVAL_TASK), REPORT, SERVE_LOG, AGAINST,
)  # every name above, each distinct
PROMOTED = "promoted.json"  # runs/<name>/promoted.json, beside the run folders: `ftc promote`'s current run and history
AGAINST_FORMAT = 1  # against.json
PROMOTED_FORMAT = 1  # promoted.json

RECORD_FORMAT = 1  # run.json
EVAL_FORMAT = 1  # eval.json and eval-endpoint.json


class RunFolderError(Exception):
    """A run folder is missing or incomplete; the message says what to do."""


# ---- the records ----------------------------------------------------------------------------------------


class Device(RecordModel):
    kind: str
    name: str
    precision: str | None = None
    count: int | None = None  # cuda
    threads: int | None = None  # cpu


class Session(RecordModel):
    """One execution of the script: `ftc run`, then each `ftc run --resume`."""

    started: str | None = None
    resumed: bool | None = None
    pid: int | None = None
    ended: str | None = None
    status: str | None = None
    exit_code: int | None = None
    first_step: int | None = None
    last_step: int | None = None
    tokens_per_second: float | None = None
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = None
    resumed_from: str | None = None


class Distributed(RecordModel):
    processes: int | None = None
    backend: str | None = None
    mode: str | None = None


class MergeTolerance(RecordModel):
    max_abs_logit_diff: float | None = None
    mean_abs_logit_diff: float | None = None
    top1_agreement: float | None = None
    rule: str | None = None


class MergeCheck(RecordModel):
    """run.json "merge": how `ftc merge` verified merged/ ("verified", "failed" or "not needed")."""

    status: str
    reason: str | None = None
    examples: int | None = None
    positions: int | None = None
    max_abs_logit_diff: float | None = None
    mean_abs_logit_diff: float | None = None
    top1_agreement: float | None = None
    tolerance: MergeTolerance | None = None
    dtype: str | None = None
    path: str | None = None


class Divergence(RecordModel):
    """Where vLLM and transformers first part, in the prompt's tokens or the answer's."""

    source: str | None = None
    prompt: str | None = None
    where: str | None = Field(default=None, alias="in")  # "prompt" or "answer"
    position: int | None = None
    transformers: str | None = None
    vllm: str | None = None
    transformers_ids: tuple[int, ...] | None = None
    vllm_ids: tuple[int, ...] | None = None


class ParityCheck(RecordModel):
    """run.json "serve" "parity" <mode>: does vLLM answer as transformers does ("passed", "failed", "skipped")."""

    status: str
    mode: str | None = None
    model: str | None = None
    prompts: int | None = None
    agreeing: int | None = None
    agreement: float | None = None  # (agreeing + near_ties) / prompts
    required: float | None = None
    near_ties: int | None = None  # quantized exports: answers that part where transformers' runner-up was close
    tie_margin: float | None = None
    first_divergence: Divergence | None = None
    endpoint: str | None = None
    served_dtype: str | None = None
    reference_dtype: str | None = None
    device: str | None = None
    max_new_tokens: int | None = None
    examples_from: str | None = None
    stop_token_ids: tuple[int, ...] | None = None
    chat_template_sha256: str | None = None
    vllm: str | None = None
    transformers: str | None = None
    reason: str | None = None  # why it was skipped
    checked: str | None = None
    results: tuple[dict[str, Any], ...] | None = None  # per prompt: agree, and the divergence


class Serving(RecordModel):
    """run.json "serve": the parity check of each mode `ftc serve` ran ("merged", "adapter", "prompt_embeds")."""

    parity: dict[str, ParityCheck] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _one_check(cls, data: Any) -> Any:
        # an older ftc kept a single check, which names its mode
        parity = data.get("parity") if isinstance(data, dict) else None
        if isinstance(parity, dict) and "status" in parity:
            return {**data, "parity": {parity.get("mode") or MERGED: parity}}
        return data


class ExportCheck(RecordModel):
    """run.json "exports" <format>: what `ftc export` wrote and how its gate judged it ("passed" or "rejected")."""

    status: str
    family: str | None = None  # "gguf" or "compressed"
    path: str | None = None  # relative to the run folder
    files: dict[str, str] = Field(default_factory=dict)  # name -> sha256
    bytes: int | None = None
    quantization: dict[str, Any] = Field(default_factory=dict)  # what the writer did (method, group size, fallbacks)
    checked_with: str | None = None  # how the export was loaded for the gate
    gate: dict[str, Any] = Field(default_factory=dict)  # the thresholds and what was measured against merged/
    failures: tuple[str, ...] = ()


class ParentRun(RecordModel):
    """run.json "parent" "run": the run whose merged/ or final/ folder this run trained on."""

    path: str  # the folder the lock names as the base (relative to the project root), e.g. runs/a/<id>/merged
    folder: str | None = None  # "merged" or "final"
    run_id: str | None = None
    project: str | None = None
    plan_sha256: str | None = None


class Parent(RecordModel):
    """run.json "parent": what this run trained on top of: the base model as the lock names it, and the run
    that made it when it is another run's merged/ or final/ folder (runtime/lineage.py)."""

    base: str  # the lock's inputs.model.reference
    kind: str | None = None  # "folder", "gguf" or "hub"
    sha256: str | None = None  # over the lock's file hashes of the base (runtime/lineage.py model_sha256)
    revision: str | None = None
    run: ParentRun | None = None


class RunRecord(RecordModel):
    """run.json. Written when a session starts (the identity, `status` "running"), completed when it ends."""

    format_version: int | None = None
    project: str | None = None
    run_id: str | None = None
    root: str | None = None  # the project root the lock's paths are relative to
    build: str | None = None
    spec: str | None = None
    plan_sha256: str | None = None
    parent: Parent | None = None  # lineage: the base model, or the run this one continues from
    data_sha256: dict[str, str] | None = None  # split -> the data file's sha256, as the lock hashes it
    smoke: bool | None = None  # `ftc run --smoke`: a check of the pipeline, not a real run
    max_steps: int | None = None
    started: str | None = None
    sessions: tuple[Session, ...] = ()
    status: str | None = None  # "running", "completed", "interrupted", "out_of_memory", "disk_full", "failed", "crashed (...)"
    ftc_version: str | None = None
    packages: dict[str, str | None] = Field(default_factory=dict)
    version_drift: tuple[str, ...] = ()
    device: Device | None = None
    pid: int | None = None  # ftc's own process while a session runs
    exit_code: int | None = None
    ended: str | None = None
    step: int | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    rewards: dict[str, float] | None = None  # GRPO and RLOO: the last logged total reward, each reward, KL, length
    tokens_per_second: float | None = None
    peak_memory_bytes: int | None = None
    peak_memory_gib: float | None = None
    peak_memory_kind: str | None = None
    last_checkpoint: str | None = None
    best_checkpoint: str | None = None
    final: str | None = None
    early_stopped: bool | None = None
    distributed: Distributed | None = None
    merge: MergeCheck | None = None
    serve: Serving | None = None
    exports: dict[str, ExportCheck] = Field(default_factory=dict)

    def project_root(self, run_dir: Path) -> Path:
        """The project root: run.json names it; else the folder above runs/<name>/<run-id>/."""
        return Path(self.root) if self.root else run_dir.resolve().parents[2]

    @property
    def parity(self) -> dict[str, ParityCheck]:
        return dict(sorted(self.serve.parity.items())) if self.serve else {}


# ---- reading and writing --------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc}); {what}") from exc


def _invalid(path: Path, exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the top level"
    return f"{path} does not read as this ftc's record: {where}: {first['msg']} ({exc.error_count()} problem(s))"


def read_record(run_dir: Path) -> RunRecord:
    path = run_dir / RUN_RECORD
    if not path.is_file():
        raise RunFolderError(f"{run_dir} is not a run folder: it has no {RUN_RECORD} (runs are made by `ftc run`)")
    data = _read_json(path, "it was edited or cut short")
    try:
        return RunRecord.model_validate(data)
    except ValidationError as exc:
        raise RunFolderError(_invalid(path, exc)) from exc


def write_record(run_dir: Path, record: RunRecord) -> None:
    write_atomic(run_dir / RUN_RECORD, json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")


def update_record(run_dir: Path, **fields: Any) -> RunRecord:
    """Replace top-level fields of run.json (atomically) and return the new record."""
    record = updated(read_record(run_dir), **fields)
    write_record(run_dir, record)
    return record


def record_parity(run_dir: Path, check: ParityCheck) -> RunRecord:
    """Keep `check` as the parity result of its mode; the other mode's result stays."""
    record = read_record(run_dir)
    parity = {**(record.serve.parity if record.serve else {}), check.mode or MERGED: check}
    return update_record(run_dir, serve=Serving(parity=parity))


def read_evaluation(run_dir: Path, name: str = EVAL) -> EvalRecord | None:
    """eval.json (or eval-endpoint.json); None when there is none. Raises RunFolderError when it is unreadable
    or of another format."""
    path = run_dir / name
    if not path.is_file():
        return None
    data = _read_json(path, "it was edited or cut short")
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != EVAL_FORMAT:
        raise RunFolderError(f"{name} has format_version {version!r}; this ftc reads version {EVAL_FORMAT}")
    try:
        return EvalRecord.model_validate(data)
    except ValidationError as exc:
        raise RunFolderError(_invalid(path, exc)) from exc


def write_evaluation(run_dir: Path, evaluation: EvalRecord, name: str = EVAL) -> Path:
    path = run_dir / name
    write_atomic(path, json.dumps(evaluation.to_json(), indent=2, ensure_ascii=False) + "\n")
    return path


def run_lock(run_dir: Path) -> Lock:
    """The plan this run executed (the copy taken when it started), typed."""
    path = run_dir / LOCK
    if not path.is_file():
        raise RunFolderError(f"{run_dir} has no {LOCK}; it was not made by `ftc run`")
    try:
        return read_lock(path)
    except LockError as exc:
        raise RunFolderError(
            f"{run_dir}: this ftc cannot read the plan the run executed ({str(exc).removeprefix(f'{path}: ')}); "
            "read the run with the ftc version that made it, or compile its spec and run it again"
        ) from None


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete line of events.jsonl (a line being written is skipped)."""
    return read_jsonl(run_dir / EVENTS)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSONL file that is appended to (a line being written is skipped); none when absent."""
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


# ---- which run ------------------------------------------------------------------------------------------


def is_run(path: Path) -> bool:
    return (path / RUN_RECORD).is_file()


def runs_folder(root: Path, name: str) -> Path:
    """Where `ftc run` places the runs of project `name`."""
    return root / RUNS / name


def run_folders(root: Path, name: str) -> list[Path]:
    """The run folders of project `name`, oldest first (run ids are UTC timestamps)."""
    folder = runs_folder(root, name)
    return sorted(p for p in folder.iterdir() if is_run(p)) if folder.is_dir() else []


def _status(run_dir: Path) -> str | None:
    try:
        return read_record(run_dir).status
    except RunFolderError:
        return None


def project_name(spec: Path) -> str:
    """The project name of the spec at `spec`, read through the spec loader."""
    if not spec.is_file():
        raise RunFolderError(f"{spec} cannot be read: {'it is a folder' if spec.is_dir() else 'there is no such file'}")
    try:
        loaded, diagnostics = parse(spec)
    except OSError as exc:
        raise RunFolderError(f"{spec} cannot be read ({exc})") from exc
    if loaded is None:
        found = "; ".join(d.headline() for d in errors(diagnostics)) or "it does not validate"
        raise RunFolderError(f"{spec} is neither a run folder nor a valid spec: {found}")
    return loaded.spec.project.name


def live_process(record: RunRecord) -> int | None:
    """A process of the run that still runs (ftc's own, or the script of its last session); None when none."""
    pids = (record.pid, record.sessions[-1].pid if record.sessions else None)
    return next((pid for pid in pids if pid and is_alive(pid)), None)


def newest_run(spec: Path, root: Path | None = None, *, completed: bool = True) -> Path:
    """The newest run of a spec under <root>/runs/<project name>/ (root: the working folder, as `ftc run SPEC`
    places runs); with `completed`, the newest that completed."""
    name = project_name(spec)
    folder = runs_folder(root or Path.cwd(), name)
    runs = run_folders(root or Path.cwd(), name)
    if not completed:
        if not runs:
            raise RunFolderError(f"there is no run of {name} in {folder}; start one with `ftc run {spec}`")
        return runs[-1]
    done = [p for p in runs if _status(p) == "completed"]
    if not done:
        seen = f" ({len(runs)} run(s) there, none completed)" if runs else ""
        raise RunFolderError(f"no completed run of {name} in {folder}{seen}; train one with `ftc run {spec}`")
    return done[-1]
