"""`ftc run`: execute exactly the plan on disk, watch it, and record how it went.

Pre-flight, before any weights load: the inputs' hashes and the build folder are compared with the lock
(compiler/build/stale.py; a stale lock, a hand-edited script or a file the lock does not list is refused,
naming what changed and what to run; only a changed input costs a compile in memory); installed packages
are compared with the lock's pins; the device the plan wants is checked. The generated script
then runs as a child process in its own process group, writing into runs/<name>/<run-id>/ (see
runtime/runfolder.py); a plan on several devices runs through launch.sh, whose torchrun starts one worker process
per device. Its events.jsonl drives the progress display, and run.json records the outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ftc.compiler import __version__
from ftc.compiler.build.compile import SCRIPT_NAME, Build, unsafe_build_paths
from ftc.compiler.atomic import is_alive
from ftc.compiler.build.lock import LOCK_NAME, LockError, plan_hash, read_lock
from ftc.compiler.build.stale import check_hashes, stale_reasons
from ftc.compiler.exitcodes import EXIT_DISK_FULL, EXIT_INTERRUPTED, EXIT_OK, EXIT_OUT_OF_MEMORY
from ftc.compiler.plan.model import Lock
from ftc.compiler.plan.resolve import installed_versions
from ftc.runtime.lineage import lineage
from ftc.runtime.models import sealed_checkpoints
from ftc.runtime.run.progress import rl_stats
from ftc.runtime.runfolder import (
    CHECKPOINTS,
    EVENTS,
    FINAL,
    LOCK,
    RECORD_FORMAT,
    TRAIN_LOG,
    Device,
    RunFolderError,
    RunRecord,
    newest_run,
    read_record,
    updated,
    write_record,
)
from ftc.runtime.runfolder import Session as SessionRecord
from ftc.runtime.runfolder import (
    runs_folder as project_runs,
)

# Exit statuses of the generated scripts (templates/run_support.py) and what they mean.
SCRIPT_STATUS = {EXIT_OK: "completed", EXIT_INTERRUPTED: "interrupted", EXIT_OUT_OF_MEMORY: "out_of_memory", EXIT_DISK_FULL: "disk_full"}


class RunRefused(Exception):
    """The build cannot run as it is; the message says why and what to do."""


@dataclass(frozen=True)
class Target:
    spec: Path
    root: Path


def locate(target: Path) -> Target:
    """A spec file, or a build folder (build/<name>/, not a link) whose lock names its spec and its name."""
    if not target.is_dir():
        return Target(target, Path.cwd())
    if unsafe := unsafe_build_paths(target):
        raise RunRefused("\n".join(unsafe))
    lock_path = target / LOCK_NAME
    if not lock_path.is_file():
        raise RunRefused(f"{target} has no {LOCK_NAME}; give a spec, or compile one into this folder first")
    try:
        lock = read_lock(lock_path)
    except LockError as exc:
        raise RunRefused(f"{exc}; give the spec instead") from None
    folder = target.resolve()
    if lock.smoke is not None:
        raise RunRefused(f"{target} is the smoke build of {lock.smoke.of_project}: run `ftc run SPEC --smoke`, or give the spec")
    if folder.parent.name != "build" or folder.name != lock.project.name:
        raise RunRefused(f"{target} holds the build of project {lock.project.name!r} ({lock.inputs.spec.path}), and a build runs only from "
                         f"build/{lock.project.name}/ in its project: give the spec instead, or compile it there")
    root = folder.parents[1]  # build/<name>/ lies under the project root
    return Target(root / lock.inputs.spec.path, root)


def check_current(
    where: Target, recompile: Callable[[], Build | None], allow_version_drift: bool = False
) -> tuple[Build, list[str]]:
    """Refuse a build that differs from its inputs, judged from the hashes the lock records: when they all match,
    nothing is tokenized. `recompile` compiles the spec in memory (reporting its diagnostics, None when it
    fails); it is called only when an input changed, to name every consequence. Returns the build on disk and
    the package drift that was allowed (for a warning)."""
    found = check_hashes(where.spec, where.root)
    spec = os.path.relpath(where.spec)
    if found.directory is None and recompile() is None:  # the spec does not validate: compiling reported why
        raise RunRefused(f"{spec} has errors (listed above); fix them, then run `ftc compile {spec}`")
    unsafe = unsafe_build_paths(found.directory, found.lock.artifacts if found.lock else ()) if found.directory else []
    if unsafe:  # named before the hashes' reasons: hashing follows links
        raise RunRefused(f"the build in {os.path.relpath(found.directory)} is not safe to run:" + "".join(f"\n  - {u}" for u in unsafe))
    drift = found.drift
    if drift and not allow_version_drift:
        listing = "\n".join(f"  - {d}" for d in drift)
        raise RunRefused(
            f"the installed packages differ from the versions the plan was locked with:\n{listing}\n"
            f"install the pinned versions, or run `ftc compile {spec}` to lock these ones, "
            "or pass --allow-version-drift to run anyway (the run records the drift)"
        )
    reasons = stale_reasons(found, recompile, allow_package_drift=allow_version_drift)
    if reasons:
        listing = "\n".join(f"  - {r}" for r in reasons)
        where_built = os.path.relpath(found.directory) if found.directory else "build/"
        raise RunRefused(f"the build in {where_built} does not match its inputs:\n{listing}\nrun `ftc compile {spec}` first")
    return found.build(), drift


def check_device(lock: Lock) -> dict[str, Any]:
    """The device this machine gives the plan; refuses what cannot run here. Loads no weights."""
    import torch

    hardware = lock.hardware
    has_cuda = torch.cuda.is_available()
    if hardware.accelerator == "cuda" and not has_cuda:
        raise RunRefused('the plan needs CUDA (hardware.accelerator = "cuda") and this machine has no CUDA device; '
                         'run it on a GPU machine, or set hardware.accelerator = "auto" to allow the CPU')
    device = "cuda" if has_cuda and hardware.accelerator != "cpu" else "cpu"
    if device == "cpu" and hardware.strategy.startswith("deepspeed"):
        raise RunRefused(f'the plan shards the model with DeepSpeed ({hardware.strategy}), which needs CUDA, and this machine has none; '
                         'set hardware.strategy = "fsdp" or "ddp" to train on the CPU, or run it on GPUs')
    precision = hardware.precision.get(device)
    if precision is None:
        raise RunRefused(f'the plan has no settings for {device}; set hardware.accelerator = "auto" or "{device}" and compile again')
    if device == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise RunRefused(f'the plan trains in bf16 and {torch.cuda.get_device_name()} does not support it; set hardware.precision = "fp16" and compile again')
        if hardware.devices > torch.cuda.device_count() and hardware.nodes == 1:
            raise RunRefused(f"the plan needs {hardware.devices} GPUs and this machine has {torch.cuda.device_count()}")
        return {"kind": "cuda", "name": torch.cuda.get_device_name(), "count": torch.cuda.device_count(), "precision": precision}
    return {"kind": "cpu", "name": "cpu", "threads": torch.get_num_threads(), "precision": precision}


def locked_plan_hash(build: Build) -> str:
    """The hash of the plan on disk, which is what runs (it differs from the fresh one only by allowed package drift)."""
    return plan_hash(read_lock(build.directory / LOCK_NAME))


def new_run_dir(build: Build) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = runs_folder(build)
    run_dir = base / stamp
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = base / f"{stamp}-{n}"
    return run_dir


def runs_folder(build: Build) -> Path:
    return project_runs(build.directory.parents[1], build.name)


def latest_run(build: Build) -> Path:
    """The newest run folder of this build's spec, for `ftc run --resume` without a folder."""
    root = build.directory.parents[1]
    try:
        return newest_run(root / build.lock.inputs.spec.path, root, completed=False)
    except RunFolderError as exc:
        raise RunRefused(f"nothing to resume: {exc}") from exc


def check_resumable(build: Build, run_dir: Path) -> RunRecord:
    """The record of a run that can continue with this build; refuses a finished run or one from another plan."""
    try:
        record = read_record(run_dir)
    except RunFolderError as exc:
        raise RunRefused(str(exc)) from exc
    if record.plan_sha256 != locked_plan_hash(build):
        raise RunRefused(
            f"{run_dir} ran plan sha256:{str(record.plan_sha256)[:12]}, and the build is now sha256:{locked_plan_hash(build)[:12]}; "
            "a resumed run must continue the same plan: start a new run instead"
        )
    if record.status == "completed":
        raise RunRefused(f"{run_dir} has already completed; start a new run instead")
    if record.status == "running":
        alive = [pid for pid in (record.pid, record.sessions[-1].pid if record.sessions else None) if pid and is_alive(pid)]
        if alive:
            raise RunRefused(f"{run_dir} is still running (process {alive[0]}); stop it first (Ctrl-C, or kill -INT {alive[0]})")
    if not sealed_checkpoints(run_dir):
        raise RunRefused(f"nothing to resume: {run_dir} holds no complete checkpoint (it stopped before sealing one); start a new run instead")
    return record


def command_for(build: Build, run_dir: Path) -> list[str]:
    """One process runs the script; several go through the build's launch.sh (accelerate launch)."""
    hardware = build.lock.hardware
    if hardware.nodes > 1:
        raise RunRefused(
            f"the plan spans {hardware.nodes} nodes: start build/{build.name}/launch.sh on each node "
            f"(it says how), or submit build/{build.name}/slurm.sbatch"
        )
    if hardware.devices > 1:
        return ["bash", str(build.directory / "launch.sh"), "--output-dir", str(run_dir), "--no-progress-bar"]
    return [sys.executable, str(build.directory / SCRIPT_NAME), "--output-dir", str(run_dir), "--no-progress-bar"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def start_record(build: Build, run_dir: Path, device: dict[str, Any], drift: list[str], resume: bool) -> RunRecord:
    """Write run.json (and the plan's copy) as a session starts; a resumed run keeps its history."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        record = read_record(run_dir)
    else:
        shutil.copyfile(build.directory / LOCK_NAME, run_dir / LOCK)
        record = RunRecord(
            format_version=RECORD_FORMAT,
            project=build.name,
            run_id=run_dir.name,
            root=str(build.directory.parents[1]),
            build=f"build/{build.name}",
            spec=build.lock.inputs.spec.path,
            plan_sha256=locked_plan_hash(build),
            max_steps=build.lock.training.max_steps, **lineage(build.lock, build.directory.parents[1]),
            started=_now(),
            sessions=(),
        )
    record = updated(
        record,
        status="running",
        ftc_version=__version__,
        packages=installed_versions(),
        version_drift=drift,
        device=Device.model_validate(device),
        pid=os.getpid(),
        sessions=(*record.sessions, SessionRecord(started=_now(), resumed=resume)),
    )
    write_record(run_dir, record)
    return record


@dataclass
class Session:
    """What one execution of the script reported, read from its events."""

    max_steps: int
    step: int = 0
    first_step: int | None = None
    tokens: int = 0
    train_loss: float | None = None
    eval_loss: float | None = None
    rewards: dict[str, float] = field(default_factory=dict)  # GRPO and RLOO: the last logged rewards, KL, length
    tokens_per_second: float | None = None
    checkpoint: str | None = None
    end: dict[str, Any] = field(default_factory=dict)
    start: dict[str, Any] = field(default_factory=dict)
    distributed: dict[str, Any] = field(default_factory=dict)

    def take(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.start = event
        elif kind in ("train_begin", "step"):
            self.step = event.get("step", self.step)
            self.tokens = event.get("tokens", self.tokens)
            if self.first_step is None:
                self.first_step = self.step
            self.max_steps = event.get("max_steps", self.max_steps)
        elif kind == "log":
            self.train_loss = event.get("loss", self.train_loss)
            self.eval_loss = event.get("eval_loss", self.eval_loss)
            self.rewards = rl_stats(event) or self.rewards
            self.tokens_per_second = event.get("train_tokens_per_second", self.tokens_per_second)
        elif kind == "checkpoint":
            self.checkpoint = event["path"]
        elif kind == "distributed":
            self.distributed = {k: event[k] for k in ("processes", "backend", "mode") if k in event}
        elif kind == "end":
            self.end = event


class EventTail:
    """Reads the lines a running script appends to events.jsonl, from where this session began."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.is_file() else 0
        self.partial = ""

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open(encoding="utf-8") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
            self.offset = fh.tell()
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def _process_tree(pid: int) -> dict[int, str]:
    """The processes started under `pid` (children, grandchildren, ...), each with its start time, read from /proc
    (Linux; elsewhere none). torchrun starts every worker in a session of its own, out of reach of signals sent to
    ftc's process group, so ftc keeps track of them itself."""
    parents: dict[int, int] = {}
    started: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, ... starttime is 20th
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
        started[int(stat.parent.name)] = fields[19]
    tree: dict[int, str] = {}
    for candidate in parents:
        ancestor = parents[candidate]
        while ancestor > 1 and ancestor != pid:
            ancestor = parents.get(ancestor, 0)
        if ancestor == pid:
            tree[candidate] = started[candidate]
    return tree


def _workers(tree: dict[int, str], script: Path) -> dict[int, str]:
    """The processes of `tree` that run the training script itself (torchrun's workers), not the launcher that
    names it on its command line."""
    found = {}
    for pid, started in tree.items():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(script.name.encode()) for a in argv) and not any(a.endswith((b"accelerate", b"torchrun")) for a in argv):
            if any(Path(os.fsdecode(a)).resolve() == script.resolve() for a in argv if a.endswith(script.name.encode())):
                found[pid] = started
    return found


def _signal_tree(tree: dict[int, str], sig: signal.Signals) -> int:
    """Send `sig` to the processes of `tree` that still run (a reused process id has another start time); how many."""
    sent = 0
    for pid, started in tree.items():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] != started:
                continue
            os.kill(pid, sig)
            sent += 1
        except (OSError, IndexError):
            continue
    return sent


def _pump(stream, log_path: Path, show: Callable[[str], None]) -> None:
    """Copy the child's output to train.log and to the screen, line by line."""
    with log_path.open("a", encoding="utf-8") as log:
        for line in iter(stream.readline, ""):
            log.write(line)
            log.flush()
            show(line.rstrip("\n"))


def script_env() -> dict[str, str]:
    """The environment the training script (and every process its launcher starts) runs in."""
    # ftc draws the progress: the libraries' own bars would only scroll past as lines of carriage returns
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    # The script's folder never goes first on sys.path (Python's safe-path mode): a file planted next to train.py,
    # say build/<name>/argparse.py, is not imported in place of the real module.
    env["PYTHONSAFEPATH"] = "1"
    # launch.sh calls `accelerate`: the one installed next to this Python, even in a virtual environment not activated
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def execute(build: Build, run_dir: Path, device: dict[str, Any], drift: list[str], resume: bool, display) -> RunRecord:
    """Run the build as a child process, show its progress, and return the final run record.

    Ctrl-C (or SIGTERM) is passed on once as SIGINT: the script saves a checkpoint at the end of the step
    and stops. A second Ctrl-C is passed on too, and the script stops at once."""
    command = command_for(build, run_dir)
    record = start_record(build, run_dir, device, drift, resume)
    if resume:
        command.append("--resume")
    tail = EventTail(run_dir / EVENTS)
    session = Session(max_steps=record.max_steps)
    child = subprocess.Popen(
        command, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
        process_group=0,  # Ctrl-C reaches ftc only, which passes it on once per press
    )
    record = updated(record, sessions=(*record.sessions[:-1], updated(record.sessions[-1], pid=child.pid)))
    write_record(run_dir, record)
    pump = threading.Thread(target=_pump, args=(child.stdout, run_dir / TRAIN_LOG, display.line), daemon=True)
    pump.start()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    interrupts = 0
    several = build.lock.hardware.devices > 1
    workers: dict[int, str] = {}  # launch.sh's processes, workers included, as last seen
    looked = 0.0
    try:
        with display:
            while True:
                try:
                    for event in tail.read():
                        session.take(event)
                        display.event(event, session)
                    if child.poll() is not None:
                        break
                    if several and time.monotonic() - looked > 2:
                        workers.update(_process_tree(child.pid))
                        looked = time.monotonic()
                    time.sleep(0.2)
                except KeyboardInterrupt:
                    interrupts += 1
                    display.line("ftc: stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)" if interrupts == 1 else "ftc: stopping now")
                    # One process: the script gets it. Several: the workers get it directly, not torchrun, which
                    # would pass it on and SIGKILL any worker still busy 30 s later, its checkpoint half written
                    # on a loaded machine. Before the workers run (or when none is found), torchrun gets it. A
                    # second Ctrl-C reaches every process.
                    running = _workers({**workers, **_process_tree(child.pid)}, build.directory / SCRIPT_NAME) if several else {}
                    if interrupts == 1 and running:
                        _signal_tree(running, signal.SIGINT)
                    else:
                        os.killpg(child.pid, signal.SIGINT)
                    if interrupts > 1:
                        _signal_tree({**workers, **_process_tree(child.pid)}, signal.SIGINT)
            if several and _signal_tree(workers, signal.SIGKILL):
                display.line("ftc: the launcher ended before all its workers; stopped the rest")
            pump.join(timeout=10)
            for event in tail.read():
                session.take(event)
                display.event(event, session)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return finish_record(run_dir, session, child.returncode, interrupted=interrupts > 0)


def finish_record(run_dir: Path, session: Session, returncode: int, interrupted: bool = False) -> RunRecord:
    record = read_record(run_dir)
    if returncode < 0:
        status = f"crashed (killed by {signal.Signals(-returncode).name})"
    elif interrupted and returncode > 0 and not session.end:
        status = "interrupted"  # stopped at once by a second Ctrl-C: torchrun ended its workers before they could say so
    else:
        status = session.end.get("status") or SCRIPT_STATUS.get(returncode, "failed")
    if returncode > 0 and status in SCRIPT_STATUS.values() and status != "completed":
        # the script's own status: launch.sh's torchrun exits 1 whenever its workers stop with any status but 0
        returncode = next(code for code, name in SCRIPT_STATUS.items() if name == status)
    end = session.end
    this = updated(
        record.sessions[-1],
        ended=_now(),
        status=status,
        exit_code=returncode,
        first_step=session.first_step,
        last_step=session.step,
        tokens_per_second=session.tokens_per_second,
        peak_memory_bytes=end.get("peak_memory_bytes"),
        peak_memory_kind=end.get("peak_memory_kind"),
        resumed_from=session.start.get("resume_from"),
    )
    best = end.get("best_checkpoint")
    record = updated(
        record,
        drop=("pid",),
        sessions=(*record.sessions[:-1], this),
        status=status,
        exit_code=returncode,
        ended=this.ended,
        step=session.step,
        train_loss=session.train_loss if session.train_loss is not None else record.train_loss,
        eval_loss=session.eval_loss if session.eval_loss is not None else record.eval_loss,
        tokens_per_second=session.tokens_per_second,
        peak_memory_bytes=this.peak_memory_bytes,
        peak_memory_gib=round(this.peak_memory_bytes / 2**30, 3) if this.peak_memory_bytes else None,
        peak_memory_kind=this.peak_memory_kind,
        last_checkpoint=f"{CHECKPOINTS}/{session.checkpoint}" if session.checkpoint else record.last_checkpoint,
        best_checkpoint=f"{CHECKPOINTS}/{best}" if best else record.best_checkpoint,
        final=FINAL if status == "completed" else None,
        early_stopped=bool(end.get("early_stopped")),
        **({"distributed": session.distributed} if session.distributed else {}),
        **({"rewards": session.rewards} if session.rewards else {}),
    )
    write_record(run_dir, record)
    return record
