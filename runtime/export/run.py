"""`ftc export RUN_DIR`: write quantized copies of merged/ and keep each one only if it passes its parity gate.

For each format (the lock's export.formats, or --format):
  1. it is written into RUN/exports/.<format>.tmp-<pid>/ from merged/ (runtime/export/gguf.py, compressed.py);
  2. it is loaded back as a user's tool would read it, and compared with merged/ (runtime/export/gate.py);
  3. it is renamed to RUN/exports/<format>/ when the gate passes, or to RUN/exports/<format>.rejected/ when it
     fails (an older exports/<format>/ is then removed: run.json no longer vouches for it);
  4. run.json "exports" <format> records the files with their sha256, what the writer did, the gate's thresholds,
     what was measured and, for a rejected export, why.
merged/ must exist and be verified (`ftc merge` first). The command exits 1 when any format was rejected.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ftc.compiler.hashing import FileHasher
from ftc.compiler.plan.model import ExportGatePlan
from ftc.compiler.spec.export import COMPRESSED_FORMATS, GATE_DEFAULTS, GGUF_FORMATS, K_QUANTS, LLAMA_CPP_EXTRA, family
from ftc.runtime.evaluate.compare import schema_of
from ftc.runtime.export import llamacpp
from ftc.runtime.export.gate import Reference, check_carried, check_llama_cpp, judge, measure, reference_of
from ftc.runtime.merge import OLD_INFIX, remove_folder, replace_folder
from ftc.runtime.models import RunFolder, load_tokenizer, locked_chat_template, placement
from ftc.runtime.runfolder import (
    EXPORTS,
    MERGED,
    ExportCheck,
    RunFolderError,
    read_record,
    run_lock,
    update_record,
)

DEFAULT_EXAMPLES = 16
TMP_INFIX = ".tmp-"


class ExportRefused(Exception):
    """Nothing can be exported (no verified merged/, a format this machine cannot write); nothing was written."""


@dataclass(frozen=True)
class ExportResult:
    format: str
    path: Path
    record: ExportCheck

    @property
    def passed(self) -> bool:
        return self.record.status == "passed"


def gate_for(run: RunFolder, fmt: str) -> ExportGatePlan:
    """The lock's gate for `fmt`, or the format's defaults when the lock's [export] does not list it."""
    export = run.lock.export
    if export is not None and fmt in export.gates:
        return export.gates[fmt]
    top1, drop = GATE_DEFAULTS[fmt]
    return ExportGatePlan(min_top1=top1, max_metric_drop=drop, max_size_mib=None)


def refusal(run: RunFolder, fmt: str) -> str | None:
    """Why `fmt` cannot be exported from this run here, or None."""
    from ftc.runtime.export import gguf

    if fmt in K_QUANTS and not llamacpp.available():
        return f"{fmt} is a llama.cpp k-quant, made by llama.cpp's own quantizer, which needs {LLAMA_CPP_EXTRA}; ftc writes f16, q8_0, q4_0 and q4_1 itself"
    if family(fmt) == "gguf":
        return gguf.gguf_refusal(run.path / MERGED)
    return None


def _merged_run(run_dir: Path) -> RunFolder:
    record = read_record(run_dir)
    run = RunFolder(run_dir, record.project_root(run_dir), run_lock(run_dir))
    refused = run.lock.method.merge_refusal
    if refused:
        raise ExportRefused(f"{run_dir} cannot be exported: {refused}")
    status = record.merge.status if record.merge else None
    if not (run_dir / MERGED / "config.json").is_file() or status not in ("verified", "not needed"):
        why = f'its last merge failed verification (run.json "merge": {status})' if status == "failed" else f"it has no verified {MERGED}/"
        raise ExportRefused(f"{run_dir} cannot be exported: {why}. Run `ftc merge {run_dir}` first")
    return run


def _write(run: RunFolder, fmt: str, folder: Path, reference: Reference) -> tuple[dict, str]:
    """Write one export into `folder`; returns what the writer did and how the gate will load it."""
    from ftc.runtime.export import compressed, gguf

    merged = run.path / MERGED
    folder.mkdir(parents=True)
    if family(fmt) == "gguf":
        out = folder / f"{run.name}-{fmt}.gguf"
        written = out if fmt in GGUF_FORMATS else folder / ".f16.gguf"  # the k-quants' source, deleted once quantized
        info = gguf.write_gguf(
            merged, written, fmt if fmt in GGUF_FORMATS else "f16",
            chat_template=reference.chat_template, eos_token_ids=reference.stop_ids, name=run.name,
        )
        if fmt in K_QUANTS:  # llama.cpp's quantizer, from the F16 file
            try:
                info = {**info, **llamacpp.quantize(written, out, fmt), "bytes": out.stat().st_size}
            finally:
                written.unlink(missing_ok=True)
        else:
            info["method"] = "F16" if fmt == "f16" else f"{fmt.upper()} blocks of 32, round-to-nearest (the gguf package's numpy quantizer)"
        readers = "transformers' GGUF loader (dequantized to float32)"
        if llamacpp.available():
            readers += f" and llama.cpp (llama-cpp-python {llamacpp.version()})"
        return info, readers
    return compressed.write_compressed(merged, folder, fmt), compressed.CHECKED_WITH


def _load(fmt: str, folder: Path):
    """(model, tokenizer, chat template, stop ids) as read back from the written files."""
    from ftc.runtime.export import compressed, gguf

    if family(fmt) == "gguf":
        (path,) = folder.glob("*.gguf")
        model, tokenizer = gguf.load_gguf(path)
        carried = gguf.carried(path)
        return model, tokenizer, carried["chat_template"], carried["stop_ids"]
    from transformers import AutoTokenizer

    model, tokenizer = compressed.load_compressed(folder), AutoTokenizer.from_pretrained(str(folder))
    template, stop_ids = compressed.carried(folder, tokenizer)
    return model, tokenizer, template, stop_ids


def _export_one(run: RunFolder, fmt: str, reference: Reference, device: str, step: Callable[[str], None]) -> ExportResult:
    exports = run.path / EXPORTS
    tmp = exports / f".{fmt}{TMP_INFIX}{os.getpid()}"
    try:
        step(f"{fmt}: writing")
        info, checked_with = _write(run, fmt, tmp, reference)
        hasher = FileHasher(use_cache=False)
        files = {p.name: hasher.sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        size = sum((tmp / name).stat().st_size for name in files)
        step(f"{fmt}: loading it back")
        model, tokenizer, template, stop_ids = _load(fmt, tmp)
        model = model.to(device).eval()
        measured = measure(run, reference, model, step, fmt)
        del model
        check_carried(measured, reference, template, tokenizer, stop_ids)
        if family(fmt) == "gguf" and llamacpp.available():
            step(f"{fmt}: reading it with llama.cpp")
            check_llama_cpp(measured, reference, next(tmp.glob("*.gguf")))
        gate, failures = judge(measured, reference, gate_for(run, fmt), size)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    passed = not failures
    dest = exports / (fmt if passed else f"{fmt}.rejected")
    replace_folder(tmp, dest)
    if passed and (exports / f"{fmt}.rejected").exists():
        remove_folder(exports / f"{fmt}.rejected")  # from an earlier attempt; this one passed
    elif not passed and (exports / fmt).exists():
        remove_folder(exports / fmt)  # run.json no longer vouches for it
    record = ExportCheck(
        status="passed" if passed else "rejected",
        family=family(fmt),
        path=str(dest.relative_to(run.path)),
        files=files,
        bytes=size,
        quantization=info,
        checked_with=checked_with,
        gate=gate,
        failures=tuple(failures),
    )
    return ExportResult(fmt, dest, record)


def remove_leftovers(run_dir: Path) -> None:
    """Folders a killed export left behind (.<format>.tmp-<pid>/, and ones renamed aside to be replaced)."""
    from ftc.compiler.atomic import is_alive

    for leftover in (run_dir / EXPORTS).glob(".*"):
        infix = TMP_INFIX if TMP_INFIX in leftover.name else OLD_INFIX
        pid = leftover.name.rpartition(infix)[2]
        if pid.isdigit() and not is_alive(int(pid)):
            shutil.rmtree(leftover)


def export_run(run_dir: Path, formats: list[str] | None = None, examples: int | None = None, step: Callable[[str], None] | None = None) -> list[ExportResult]:
    """Export merged/ in each format and gate it; every result is recorded in run.json "exports" as it comes.
    Raises ExportRefused before anything is written when the run or a format cannot be exported."""
    import torch
    from transformers import AutoModelForCausalLM

    step = step or (lambda _: None)
    try:
        run = _merged_run(run_dir)
    except RunFolderError as exc:
        raise ExportRefused(str(exc)) from exc
    export = run.lock.export
    formats = list(formats or (export.formats if export else []))
    if not formats:
        raise ExportRefused(f"the run's spec has no [export] table: name the formats with --format (one of {', '.join(GGUF_FORMATS + COMPRESSED_FORMATS)})")
    for fmt in formats:
        why = refusal(run, fmt)
        if why:
            raise ExportRefused(f"{fmt} cannot be exported: {why}")
    examples = examples or (export.examples if export else DEFAULT_EXAMPLES)
    (run_dir / EXPORTS).mkdir(exist_ok=True)
    remove_leftovers(run_dir)
    tokenizer = load_tokenizer(run)
    chat_template, _ = locked_chat_template(run)
    step("loading merged/")
    device = placement(run.lock).device
    merged = AutoModelForCausalLM.from_pretrained(str(run_dir / MERGED), dtype=torch.float32, use_safetensors=True)
    merged = merged.to(device).eval()
    validator = schema_of(run, run.lock.evaluation)[0]
    reference = reference_of(run, merged, tokenizer, chat_template, examples, validator, step)
    del merged
    results = []
    for fmt in formats:
        result = _export_one(run, fmt, reference, device, step)
        exports = {**read_record(run_dir).exports, fmt: result.record}
        update_record(run_dir, exports=dict(sorted(exports.items())))
        results.append(result)
    return results
