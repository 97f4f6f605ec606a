"""Load what a run trained, from its folder alone: the base model, the tuned model and the tokenizer.

Everything comes from the run's copy of the plan (RUN/ftc.lock.json). The dense base loads through the very
function the generated script includes (templates/load_model.py: load_dense); where the base is and the QLoRA
branch follow the script (templates/sft.py.j2: model_location and the QLoRA branch), so that these are the
models the run trained against:
  - a GGUF base is unpacked on load (GgufConfig(dequantize=True)) and the loading-only marker removed;
    any other base loads from safetensors only;
  - QLoRA quantizes a dense base to 4 bits with the plan's bitsandbytes settings. For a GGUF base the
    dense copy is RUN/base-dequantized/, which the run wrote; if it is gone it is written again the same way;
  - the tokenizer carries the locked chat template, checked against the sha256 in the lock.
Paths in the lock are relative to the project root, which run.json records ("root").
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler.atomic import is_alive
from ftc.compiler.build.compile import build_dir
from ftc.compiler.hashing import sha256_bytes
from ftc.compiler.plan.inputs import InputError, package_file
from ftc.compiler.plan.model import Lock
from ftc.runtime.runfolder import (
    CHAT_TEMPLATE_NAME,
    CHECKPOINTS,
    DEQUANTIZED_BASE,
    FINAL,
    RunFolderError,
    RunRecord,
    live_process,
    read_record,
    run_lock,
)
from ftc.templates.load_model import load_dense

CHECKPOINT_SEAL = "ftc-checkpoint.json"  # written last into a sealed checkpoint (templates/run_support.py)


@dataclass(frozen=True)
class RunFolder:
    """A finished run: its folder, the project root its lock's paths are relative to, and the lock."""

    path: Path
    root: Path
    lock: Lock

    @property
    def name(self) -> str:
        return self.lock.project.name

    @property
    def final(self) -> Path:
        return self.path / FINAL

    @property
    def adapter(self) -> bool:
        """LoRA, QLoRA and DPO with LoRA save an adapter; full fine-tuning saves every weight."""
        return self.lock.method.produces_adapter

    @property
    def quantized(self) -> bool:
        return self.lock.method.quantized_base


@dataclass(frozen=True)
class Placement:
    """Where the models go and in which dtypes, chosen per device as the generated script chooses."""

    device: str
    dtype: Any  # torch.dtype of the weights as loaded (lock model.dtype)
    compute_dtype: Any  # QLoRA's bnb_4bit_compute_dtype; the same as dtype otherwise


def open_run(run_dir: Path) -> RunFolder:
    """Read run.json and the run's lock; refuse a folder whose training did not save final/."""
    record = read_record(run_dir)
    problem = unfinished(run_dir, record)
    if problem:
        raise RunFolderError(problem)
    run = RunFolder(run_dir, record.project_root(run_dir), run_lock(run_dir))
    expected = "adapter_model.safetensors" if run.adapter else "config.json"
    if not (run.final / expected).is_file():
        raise RunFolderError(
            f"{run_dir} has no {FINAL}/{expected}: the run did not finish; resume it with `ftc run --resume {run_dir}`"
        )
    check_weights_whole(run.final)
    if run.adapter:
        check_base_unchanged(run)
    return run


def sealed_checkpoints(run_dir: Path) -> list[str]:
    """The names of the run's checkpoints that carry a seal, oldest first (the script checks each file's hash
    when it resumes; a folder without a seal was being written when the run stopped)."""
    found = (run_dir / CHECKPOINTS).glob(f"checkpoint-*/{CHECKPOINT_SEAL}")
    steps = {p.parent.name: p.parent.name.rpartition("-")[2] for p in found}
    return sorted(steps, key=lambda name: int(steps[name]) if steps[name].isdigit() else -1)


def unfinished(run_dir: Path, record: RunRecord) -> str | None:
    """Why the run's final model cannot be trusted, and what to do; None when run.json says it completed (a
    record without a status, from an older ftc, is taken at its word). A run killed while saving its final
    model leaves final/ half written: only the record's "completed" vouches for it."""
    if record.status in (None, "completed"):
        return None
    alive = live_process(record)
    if record.status == "running" and alive:
        return f"{run_dir} is still training (process {alive}); wait until `ftc run` completes it"
    how = "it was killed: run.json still says running" if record.status == "running" else f"run.json says {record.status}"
    spec = record.spec or "SPEC"
    sealed = sealed_checkpoints(run_dir)
    if sealed:
        todo = f"resume it from its last sealed checkpoint ({sealed[-1]}) with `ftc run {spec} --resume {run_dir}`"
    else:
        todo = f"it sealed no checkpoint to resume from: start a new run with `ftc run {spec}`"
    return f"{run_dir} did not complete ({how}), so its {FINAL}/ is missing or may be half written; {todo}"


def check_weights_whole(folder: Path) -> None:
    """Refuse safetensors files in `folder` that are cut short or damaged (the header must describe the file
    exactly), before any model loads them. Reads the headers only."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise RunFolderError(
                f"{path} cannot be read ({exc}): it was cut short or damaged since training wrote it; "
                "restore the run folder from a copy, or train it again"
            ) from None


def check_base_unchanged(run: RunFolder) -> None:
    """An adapter only means something on the base it was trained on: its files must still hash as locked."""
    from ftc.compiler.hashing import FileHasher
    from ftc.compiler.plan.inputs import resolve_model

    model = run.lock.inputs.model
    try:
        with FileHasher() as hasher:
            found = resolve_model(model.reference, model.revision, run.root, run.root, hasher, model.kind == "hub")
    except InputError as exc:
        raise RunFolderError(f"the run's base model {model.reference} cannot be read: {exc.message}") from exc
    changed = sorted(name for name in set(model.files) | set(found.files) if model.files.get(name) != found.files.get(name))
    if changed:
        raise RunFolderError(
            f"the base model {model.reference} changed since this run trained on it ({', '.join(changed)} differ "
            "from the sha256 in the run's ftc.lock.json); the adapter only fits the base it was trained on"
        )


def placement(lock: Lock) -> Placement:
    """CUDA when present and the plan allows it, else the CPU. A plan made only for CUDA (hardware.accelerator
    = "cuda") is loaded on the CPU with its CUDA dtypes, so that a GPU run can be merged on any machine."""
    import torch

    device = (
        "cuda"
        if torch.cuda.is_available() and lock.hardware.accelerator != "cpu"
        else "cpu"
    )
    dtypes = lock.model.dtype
    key = device if device in dtypes else next(iter(sorted(dtypes)))
    dtype = getattr(torch, dtypes[key])
    compute = getattr(lock.method, "bnb_4bit_compute_dtype", None)
    return Placement(device, dtype, getattr(torch, compute[key]) if compute else dtype)


def base_location(run: RunFolder) -> tuple[str, dict[str, Any]]:
    """The base model as transformers wants it: a folder (or hub id), and the keyword arguments to load it."""
    model = run.lock.inputs.model
    reference, gguf_file, revision = (
        model.reference,
        model.gguf_file,
        model.revision,
    )
    if reference.startswith("pkg:"):
        try:
            where = str(package_file(reference)[0])  # finds the package without importing it
        except InputError as exc:
            raise RunFolderError(f"the base model {reference}: {exc.message}; {exc.hint}") from exc
    elif model.kind == "hub":
        where = reference
    else:
        path = (run.root / reference).resolve()
        if not path.exists():
            raise RunFolderError(
                f'the base model {reference} is not under the project root {run.root} (run.json "root")'
            )
        # a .gguf file: its folder, with gguf_file
        where = str(path.parent if path.is_file() else path)
    token_env = run.lock.model.token_env
    args: dict[str, Any] = {
        "gguf_file": gguf_file,
        "revision": revision,
        "token": os.environ.get(token_env) if token_env else None,
        "trust_remote_code": run.lock.model.trust_remote_code,
    }
    if gguf_file is None:
        args["use_safetensors"] = True  # never unpickle weights
    return where, args


def locked_chat_template(run: RunFolder) -> tuple[str | None, Path | None]:
    """The chat template the run trained with, and the file it is in: final/'s copy or the build's,
    whichever matches the lock's sha256. (None, None) when the plan has no template (text data)."""
    expected = run.lock.inputs.chat_template.sha256
    if expected == sha256_bytes(b""):
        return None, None
    candidates = [
        run.final / CHAT_TEMPLATE_NAME,
        build_dir(run.name, run.root) / CHAT_TEMPLATE_NAME,
    ]
    for path in candidates:
        if path.is_file() and sha256_bytes(path.read_bytes()) == expected:
            return path.read_text(encoding="utf-8"), path
    looked = ", ".join(str(p) for p in candidates)
    raise RunFolderError(
        f"no copy of the locked chat template (sha256 {expected[:12]}) was found; looked at {looked}"
    )


def load_tokenizer(run: RunFolder):
    """The tokenizer the run saved with its model (the base's if final/ has none), with the locked template."""
    from transformers import AutoTokenizer

    if (run.final / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(
            str(run.final), trust_remote_code=run.lock.model.trust_remote_code
        )
    else:
        where, args = base_location(run)
        tokenizer = AutoTokenizer.from_pretrained(
            where, **{k: v for k, v in args.items() if k != "use_safetensors"}
        )
    tokenizer.chat_template = locked_chat_template(run)[0]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _attn(run: RunFolder) -> str | None:
    attn = run.lock.model.attn_implementation
    return None if attn == "auto" else attn


def load_dense_base(run: RunFolder, place: Placement):
    """The base model with dense weights in the plan's dtype, as the run loaded it for LoRA and full training."""
    where, args = base_location(run)
    return (
        load_dense(where, place.dtype, _attn(run), args).to(place.device).eval()
    )


def save_whole(model, folder: Path) -> None:
    """Save a model's weights into `folder` whole or not at all: into a hidden folder beside it, renamed into place
    once complete, so that a kill midway never leaves a folder the next command trusts. What killed saves left
    beside it (their process gone) is removed first."""
    for leftover in folder.parent.glob(f".{folder.name}.tmp-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not is_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tmp.rename(folder)


def load_quantized_base(run: RunFolder, place: Placement):
    """The base quantized to 4 bits with the plan's bitsandbytes settings, as QLoRA trained against it."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    where, args = base_location(run)
    if args["gguf_file"] is not None:
        dense = run.path / DEQUANTIZED_BASE
        if not (dense / "config.json").is_file():
            save_whole(load_dense(where, place.dtype, _attn(run), args), dense)
        where, args = str(dense), {"use_safetensors": True}
    method = run.lock.method
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=method.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=method.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=place.compute_dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        where,
        dtype=place.dtype,
        quantization_config=config,
        device_map={"": place.device},
        attn_implementation=_attn(run),
        **args,
    )
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            # On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights on the first forward in eval mode and
            # then computes in bf16: not what training computed, and the repacked weights no longer dequantize.
            module.support_avx512bf16_for_cpu = False
    return model.eval()


def load_base(run: RunFolder, place: Placement):
    """The model the run started from: 4-bit for QLoRA, dense otherwise."""
    return (
        load_quantized_base(run, place)
        if run.quantized
        else load_dense_base(run, place)
    )


def dequantize(model, place: Placement):
    """A 4-bit model as dense weights in the compute dtype: bitsandbytes' exact dequantization of the weights
    QLoRA trained against (the full-precision originals are not these)."""
    return model.dequantize(dtype=place.compute_dtype).to(place.compute_dtype)


def load_trained_base(run: RunFolder, place: Placement):
    """The base weights the run trained against, dense: for QLoRA the 4-bit base dequantized."""
    return (
        dequantize(load_quantized_base(run, place), place)
        if run.quantized
        else load_dense_base(run, place)
    )


def attach_adapter(run: RunFolder, base):
    """The base with final/'s adapter attached, unmerged."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(run.final)).eval()


def load_tuned(run: RunFolder, place: Placement, base=None):
    """What the run trained: the base (given, or loaded as training loaded it) with final/'s adapter attached,
    unmerged; or, for full fine-tuning, the whole model from final/."""
    if not run.adapter:
        from transformers import AutoModelForCausalLM

        trust = run.lock.model.trust_remote_code
        model = AutoModelForCausalLM.from_pretrained(
            str(run.final),
            dtype=place.dtype,
            use_safetensors=True,
            trust_remote_code=trust,
            attn_implementation=_attn(run),
        )
        return model.to(place.device).eval()
    return attach_adapter(run, load_base(run, place) if base is None else base)


def tuned_for_answers(run: RunFolder, base):
    """The tuned model to generate answers with, and whether it needs decoding without a KV cache: the base with
    the adapter merged in memory (the weights merged/ holds, several times faster on a CPU than with the adapter's
    layers attached), or for the virtual-token methods (nothing to merge) the base with the adapter attached,
    which only uncached decoding answers faithfully (runtime/generate.py: generate_with_virtual_tokens)."""
    if run.lock.method.merge_refusal:
        return attach_adapter(run, base), True
    return attach_adapter(run, base).merge_and_unload(), False
