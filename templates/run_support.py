"""Training support: sealed checkpoints, progress events, a clean stop on Ctrl-C, and advice when memory runs out.

A generated script includes this file from the `# ---- ftc training support` banner down, verbatim
(compiler/build/render.py, `support`): this docstring and the imports stay above the banner, and the script
imports the same modules in its own import block at the top. So add an import here, above the banner, and to
the import block of templates/sft.py.j2 and preference.py.j2 (tests/templates/test_script_layout.py fails until both
agree). The file stays an importable module (ftc.templates.run_support), which the tests use.
"""

import errno
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

# ---- ftc training support (shared verbatim by every generated script) ----
# Checkpoints are sealed: once the trainer has written checkpoint-N, every file is flushed to disk and
# ftc-checkpoint.json records each file's size and sha256. A folder without a valid seal (the run died
# while writing it, or a file changed since) is never resumed from. Ctrl-C asks for a checkpoint at the
# end of the current step and a clean stop. Progress goes to events.jsonl, one JSON object per line.
# With several processes (launch.sh), every process trains and writes its share of a checkpoint; only the
# first (rank 0) seals checkpoints, writes events.jsonl and saves the final model's files.

CHECKPOINT_SEAL = "ftc-checkpoint.json"
EVENTS_FILE = "events.jsonl"
INTERRUPTED = 130  # exit status after a clean stop on Ctrl-C
OUT_OF_MEMORY = 3
DISK_FULL = 4


def fail(message, status=1, say=True):
    """Exit with `status`; `say` is False in the other processes of a run where every one stops alike."""
    if say:
        print(f"ftc: {message}", file=sys.stderr)
    sys.exit(status)


def is_main_process():
    """Rank 0, or the only process; torchrun (launch.sh) sets RANK in each process it starts."""
    return int(os.environ.get("RANK", 0)) == 0


def check_processes(planned):
    """Refuse a launch that differs from the plan: the batch is micro batch x accumulation x processes."""
    processes = int(os.environ.get("WORLD_SIZE", 1))
    if processes != planned:
        how = "start it with launch.sh next to this script" if planned > 1 else "start it with python train.py"
        fail(
            f"the plan trains in {planned} process(es) and this launch started {processes}; "
            f"the batch would differ: {how}"
        )


def score_only_labelled_positions(device):
    """On the CPU, let trl's fused LM head project only the positions that carry a label, as it does on CUDA.

    trl (1.16) scores every position off CUDA, to keep one shape for compilers such as Neuron's. On the CPU the
    positions without a label (the prompt, under completion-only loss) are then projected onto the whole vocabulary,
    in the forward and again in the backward, for a log-probability that is multiplied by 0. Measured on SmolLM2's
    head (49,152 words), one 2048-token row with a quarter of it labelled, forward and backward: 4.67 s for every
    position, 1.21 s for the labelled ones. The loss and the logged metrics are the same: they sum over labelled
    positions only. Another trl without this switch keeps its own default."""
    if device != "cpu":
        return
    import trl.trainer.utils as trl_utils

    default = getattr(trl_utils, "_use_triton", None)
    if default is not None:
        trl_utils._use_triton = lambda where: where.type == "cpu" or default(where)


def shard_on_cpu(config, strategy):
    """FSDP across CPU processes. torch's FSDP2 shards over gloo; accelerate (1.15) switches to FSDP only from a GPU
    type of process state and would train CPU processes as DDP, so the state set up for `config` is given that type.
    They still train on the CPU: the device was chosen with the state. report_distributed checks the result."""
    from accelerate.utils import DistributedType

    # config.device sets the state up; a new config would reset it
    if strategy != "fsdp" or config.device.type != "cpu":
        return
    if config.distributed_state.distributed_type == DistributedType.MULTI_CPU:
        config.distributed_state.distributed_type = DistributedType.MULTI_GPU


def report_distributed(trainer, monitor, strategy):
    """Say how several processes train together (number, torch.distributed backend, accelerate's mode)."""
    if trainer.args.world_size == 1:
        return
    if not torch.distributed.is_initialized():
        fail(
            f"{trainer.args.world_size} processes were started, and they did not join a process group; "
            "each would train alone"
        )
    if strategy == "fsdp" and trainer.accelerator.distributed_type.value != "FSDP":
        fail(
            f"the plan shards the model with FSDP, and accelerate set up {trainer.accelerator.distributed_type.value}; "
            "the processes would not shard"
        )
    fields = {
        "processes": torch.distributed.get_world_size(),
        "backend": str(torch.distributed.get_backend()),
        "mode": trainer.accelerator.distributed_type.value,
    }
    if monitor.main_process:
        print(f"distributed: {fields['processes']} processes, {fields['mode']} over {fields['backend']}", flush=True)
    monitor.emit("distributed", **fields)


def _sha256(path):
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_step(folder):
    found = re.fullmatch(r"checkpoint-(\d+)", folder.name)
    return int(found.group(1)) if found else -1


def seal_checkpoint(folder, step):
    """Flush every file of a written checkpoint to disk, then record them; the seal is written last."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _fsync(path)
        files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    tmp = folder / f".{CHECKPOINT_SEAL}.tmp"
    tmp.write_text(json.dumps({"step": step, "files": files}, indent=1, sort_keys=True), encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, folder / CHECKPOINT_SEAL)
    _fsync(folder)


def checkpoint_problem(folder):
    """Why a checkpoint folder cannot be resumed from, or None when its seal matches every file."""
    seal = folder / CHECKPOINT_SEAL
    if not seal.is_file():
        return f"it has no {CHECKPOINT_SEAL}: the run stopped while writing it"
    try:
        files = json.loads(seal.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError) as exc:
        return f"its {CHECKPOINT_SEAL} is unreadable ({exc})"
    for name, want in sorted(files.items()):
        path = folder / name
        try:
            if path.stat().st_size != want["bytes"]:
                return f"{name} has {path.stat().st_size} bytes, the seal says {want['bytes']}"
            if _sha256(path) != want["sha256"]:
                return f"{name} does not match its sha256 in the seal (the file was changed or damaged)"
        except OSError:  # absent, or renamed aside by the main process meanwhile
            return f"{name} is missing"
    return None


def last_sealed_checkpoint(checkpoints):
    """The newest checkpoint whose seal holds. Newer unusable ones are renamed aside (never deleted), with a message,
    by the main process; the others only skip them (all of them reach the same answer)."""
    for folder in sorted(checkpoints.glob("checkpoint-*"), key=checkpoint_step, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        if not is_main_process():
            continue
        kind = "incomplete" if "stopped while writing" in problem else "corrupt"
        aside = folder.with_name(f"{kind}-{folder.name}")
        n = 1
        while aside.exists():
            n += 1
            aside = folder.with_name(f"{kind}-{folder.name}-{n}")
        folder.rename(aside)
        print(f"ftc: skipping {folder.name}: {problem}; kept it as {aside.name}", file=sys.stderr, flush=True)
    return None


def rotate_checkpoints(checkpoints, keep, protect=None):
    """Delete the oldest sealed checkpoints beyond `keep`, only ever after a newer one is sealed."""
    if keep is None:
        return
    sealed = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if (p / CHECKPOINT_SEAL).is_file()), key=checkpoint_step
    )
    for folder in sealed[: max(len(sealed) - keep, 0)]:
        if protect is None or folder.resolve() != Path(protect).resolve():
            shutil.rmtree(folder)


def peak_memory(device):
    """The process's peak memory: CUDA's peak allocation, or the peak resident set on the CPU."""
    if device == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "peak_memory_kind": "cuda max allocated"}
    return {
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_memory_kind": "max resident set",
    }


def is_out_of_memory(exc):
    text = str(exc)
    return (
        isinstance(exc, (torch.OutOfMemoryError, MemoryError))
        or "can't allocate memory" in text
        or "not enough memory" in text
    )


def is_disk_full(exc):
    while exc is not None:
        if (
            getattr(exc, "errno", None) == errno.ENOSPC
            or "No space left on device" in str(exc)
            or "StorageFull" in str(exc)
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class RunMonitor(TrainerCallback):
    """Reports progress to events.jsonl, seals and rotates checkpoints, and turns Ctrl-C into a clean stop."""

    def __init__(self, output_dir, keep_checkpoints):
        self.output_dir = output_dir
        self.keep_checkpoints = keep_checkpoints
        self.signalled = False  # Ctrl-C reached this process
        self.stop_requested = False  # the run stops at the end of this step, with a checkpoint
        self.training = False
        self.main_process = is_main_process()
        # From the start, not from train_begin: with several processes, Ctrl-C may reach one that is still setting up
        # while another trains, and stopping that one at once would break the other's next collective.
        signal.signal(signal.SIGINT, self.request_stop)

    def emit(self, event, **fields):
        if not self.main_process:
            return
        try:
            with (self.output_dir / EVENTS_FILE).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")
        except OSError as exc:  # progress is a report, not the run: a full disk must not hide the real error
            print(f"ftc: could not write {EVENTS_FILE}: {exc}", file=sys.stderr, flush=True)

    def request_stop(self, signum, frame):
        if self.signalled:
            raise KeyboardInterrupt  # the second Ctrl-C stops at once; sealed checkpoints stay as they are
        self.signalled = True
        if self.main_process:
            when = "after this step" if self.training else "after the first step"
            print(
                f"\nftc: stopping {when} and saving a checkpoint (Ctrl-C again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True
        self.emit("train_begin", step=state.global_step, max_steps=state.max_steps, tokens=state.num_input_tokens_seen)

    def on_step_end(self, args, state, control, **kwargs):
        self.emit("step", step=state.global_step, tokens=state.num_input_tokens_seen)
        stop = self.signalled
        if args.world_size > 1:  # the signal reaches each process at its own moment: stop together, at the same step
            flag = torch.tensor([int(stop)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        if stop:
            self.stop_requested = True
            control.should_save = True
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        self.emit("log", step=state.global_step, **numbers)

    def on_save(self, args, state, control, **kwargs):
        if args.world_size > 1:
            torch.distributed.barrier()  # every process has written its files (its RNG state, its shards)
        if self.main_process:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            seal_checkpoint(folder, state.global_step)
            rotate_checkpoints(folder.parent, self.keep_checkpoints, state.best_model_checkpoint)
            self.emit("checkpoint", step=state.global_step, path=folder.name)

    def on_train_end(self, args, state, control, **kwargs):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def explain_out_of_memory(device, micro_batch, accumulation, checkpointing, method, estimate):
    """What ran out, what the plan expected, and the changes that lower the peak, cheapest first."""
    where = "GPU" if device == "cuda" else "CPU (RAM)"
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(estimate["breakdown_gib"].items()))
    advice = []
    if micro_batch > 1:
        advice.append(
            f"training.micro_batch_size = {micro_batch // 2} "
            f"(gradient accumulation doubles to {accumulation * 2}; the batch stays the same)"
        )
    if not checkpointing and method != "prefix_tuning":  # prefix tuning cannot recompute activations (peft#869)
        advice.append(
            "training.gradient_checkpointing = true (recomputes activations: about 30% slower, far less memory)"
        )
    lighter = {
        "full": 'method.kind = "lora" or "qlora" (train an adapter instead of every weight)',
        "lora": 'method.kind = "qlora" (a 4-bit base under the LoRA adapter)',
        "dpo-full": 'method.adapter = "lora" (train an adapter; the reference is then the base itself)',
        "kto-full": 'method.adapter = "lora" (train an adapter; the reference is then the base itself)',
        "orpo-full": 'method.adapter = "lora" (train an adapter instead of every weight)',
    }
    if method in lighter:
        advice.append(lighter[method])
    advice.append("a GPU with more memory, or more GPUs with hardware.strategy = \"fsdp\"")
    listing = "\n".join(f"  - {a}" for a in advice)
    return (
        f"out of memory on the {where}. The plan estimated a peak of {estimate['peak_memory_gib']:.2f} GiB per device "
        f"({parts} GiB). To lower it, change the spec and compile again:\n{listing}"
    )


def train_and_save(trainer, tokenizer, monitor, resume_from, device, output_dir, out_of_memory_advice, save=None):
    """Train, then save the final weights (with `save(trainer, folder)` when given); explain running out of memory
    or disk, and stop cleanly on Ctrl-C."""
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        state = trainer.state
        ended = {
            "step": state.global_step,
            "max_steps": state.max_steps,
            "tokens": state.num_input_tokens_seen,
            "train_runtime": result.metrics["train_runtime"],
            "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
            "early_stopped": state.global_step < state.max_steps and not monitor.stop_requested,
            **peak_memory(device),
        }
        if monitor.stop_requested:
            monitor.emit("end", status="interrupted", **ended)
            fail(
                f"stopped at step {state.global_step} with a sealed checkpoint; continue with --resume",
                INTERRUPTED,
                monitor.main_process,
            )
        final = output_dir / "final"
        if trainer.is_fsdp_enabled:
            # checkpoints stay sharded, a file per process; the trainer saves nothing for a sharded final model
            trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        if save is not None:
            save(trainer, final)
        else:  # the adapter for LoRA and QLoRA, every weight otherwise; gathered from every process
            trainer.save_model(str(final))
        if monitor.main_process:
            tokenizer.save_pretrained(str(final))  # with the locked chat template
    except KeyboardInterrupt:
        monitor.emit("end", status="interrupted", step=trainer.state.global_step, **peak_memory(device))
        fail(
            "stopped at once; the last sealed checkpoint is kept (continue with --resume)",
            INTERRUPTED,
            monitor.main_process,
        )
    except Exception as exc:
        if is_out_of_memory(exc):
            monitor.emit("end", status="out_of_memory", step=trainer.state.global_step, **peak_memory(device))
            fail(out_of_memory_advice, OUT_OF_MEMORY)
        if is_disk_full(exc):
            monitor.emit("end", status="disk_full", step=trainer.state.global_step)
            fail(
                f"the disk under {output_dir} is full ({exc}). "
                "Sealed checkpoints are intact: free some space, then continue with --resume",
                DISK_FULL,
            )
        raise
    monitor.emit("end", status="completed", final=final.name, **ended)
    if monitor.main_process:
        print(f"saved {final}")
# ---- end of ftc training support ----
