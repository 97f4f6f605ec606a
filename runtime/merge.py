"""`ftc merge RUN_DIR`: fold a run's adapter into its base, write RUN/merged/ (a plain Hugging Face folder
that vLLM loads as it is), and prove on held-out examples that the merge changed nothing.

What is merged into what:
  - LoRA (and DPO with LoRA), IA3, AdaLoRA and VeRA: the adapter goes into the dense base, in the plan's model
    dtype (peft's merge_and_unload; AdaLoRA's pruned ranks are zeros, and merge as such).
  - Prompt tuning, P-tuning and prefix tuning: refused before anything is loaded. They learn virtual tokens, not
    weight changes (peft's merge_and_unload raises); the plan's method entry says why (merge_refusal).
  - QLoRA: the adapter was trained against the 4-bit base, so the base is loaded in 4 bits exactly as the
    run loaded it, dequantized into the compute dtype (bitsandbytes' dequantize_4bit, through transformers'
    `dequantize`), and the adapter is merged into that. Merging into the original full-precision weights
    would give a model the adapter was never trained with.
  - Full fine-tuning (and DPO without an adapter): final/ already holds every weight. merged/ is a copy of it,
    so that serving always finds merged/; verification is recorded as "not needed".

merged/ holds safetensors weights, config.json (no quantization_config), the tokenizer, the locked
chat_template.jinja (byte-identical), and generation_config.json whose eos_token_id lists the tokenizer's EOS
and the chat template's end-of-turn token(s), found by rendering a short conversation with the template.

Verification: the first N held-out examples (default 4), tokenized with the locked template, go through the
base with the adapter attached (unmerged) and through merged/ as loaded back from disk. Over every position
(and, for the differences, every vocabulary entry) we measure max |dlogit|, mean |dlogit| and the share of
positions whose argmax (top-1 token) agrees. With s = 1 + max |logit| of the trained model, the merge passes when

    max |dlogit| <= max_rtol * s   and   mean |dlogit| <= mean_rtol * s   and   top-1 agreement >= min_top1

per dtype of the merged weights:      max_rtol  mean_rtol  min_top1
    float32                           1e-3      1e-4       0.99
    bfloat16                          0.15      0.02       0.90
    float16                           0.03      4e-3       0.95
Measured (4 validation examples, CPU): SmolLM2-135M quickstart LoRA (r 16, 24 steps), s = 45: float32 max 9.4e-5,
mean 1.1e-5, top-1 100%; bfloat16 max 1.59, mean 0.18, top-1 97.5% (bf16 rounds W + BA once, which W·x + B·A·x
does not: 8 bits of mantissa through 30 layers). The tiny test Llama, LoRA and QLoRA: float32 max 8.3e-7;
bfloat16 max 7.8e-3, mean 1.2e-3. A merge that loses the adapter (the base alone) measures, on the quickstart,
max 41, mean 5.4, top-1 55% in either dtype: far outside every limit. float16 is set between the two from its
3 more bits of mantissa; it was not measured. For QLoRA the reference is the 4-bit base plus the adapter, whose
weights dequantize exactly to the dense weights merged/ is built on; the same limits apply.

The folder is built as a hidden sibling and renamed to merged/ only once it passed. A merge that fails is
kept as merged.rejected/ for inspection, any older merged/ is removed, run.json says "failed", and the
command exits 1: no merged/ is ever left that the record does not vouch for.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ftc.compiler.atomic import is_alive
from ftc.runtime.generate import stop_token_ids
from ftc.runtime.heldout import held_out
from ftc.runtime.models import (
    Placement,
    RunFolder,
    attach_adapter,
    dequantize,
    load_base,
    load_tokenizer,
    load_tuned,
    locked_chat_template,
    open_run,
    placement,
)
from ftc.runtime.runfolder import (
    CHAT_TEMPLATE_NAME,
    MERGE_REJECTED,
    MERGE_TMP_PREFIX,
    MERGED,
    MergeCheck,
    MergeTolerance,
    update_record,
)
from ftc.templates import prepare

OLD_INFIX = ".old-"  # .merged.old-<pid>/: merged/ renamed aside while it is replaced or removed
PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# dtype of the merged weights -> (max_rtol, mean_rtol, min_top1); measured values in the module docstring
TOLERANCE = {
    "float32": (1e-3, 1e-4, 0.99),
    "bfloat16": (0.15, 0.02, 0.90),
    "float16": (0.03, 4e-3, 0.95),
}


class MergeFailed(Exception):
    """The merged model does not reproduce the trained one (or could not be written); the message says how."""


@dataclass(frozen=True)
class Verification:
    examples: int
    positions: int
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    top1_agreement: float
    max_abs_logit: float
    dtype: str

    def limits(self) -> tuple[float, float, float]:
        """(max |dlogit|, mean |dlogit|, top-1 agreement) this comparison must meet."""
        max_rtol, mean_rtol, min_top1 = TOLERANCE[self.dtype]
        scale = 1.0 + self.max_abs_logit
        return max_rtol * scale, mean_rtol * scale, min_top1

    @property
    def passed(self) -> bool:
        max_limit, mean_limit, min_top1 = self.limits()
        return (
            self.max_abs_logit_diff <= max_limit
            and self.mean_abs_logit_diff <= mean_limit
            and self.top1_agreement >= min_top1
        )

    def tolerance(self) -> MergeTolerance:
        max_rtol, mean_rtol, min_top1 = TOLERANCE[self.dtype]
        max_limit, mean_limit, _ = self.limits()
        return MergeTolerance(
            max_abs_logit_diff=max_limit,
            mean_abs_logit_diff=mean_limit,
            top1_agreement=min_top1,
            rule=f"s = 1 + max|logit| = {1 + self.max_abs_logit:.4g}; max|dlogit| <= {max_rtol:g}*s, mean|dlogit| <= {mean_rtol:g}*s, top-1 >= {min_top1:g}",
        )

    def record(self, path: str) -> MergeCheck:
        return MergeCheck(
            status="verified" if self.passed else "failed",
            examples=self.examples,
            positions=self.positions,
            max_abs_logit_diff=self.max_abs_logit_diff,
            mean_abs_logit_diff=self.mean_abs_logit_diff,
            top1_agreement=self.top1_agreement,
            tolerance=self.tolerance(),
            dtype=self.dtype,
            path=path,
        )

    def summary(self) -> str:
        max_limit, mean_limit, min_top1 = self.limits()
        return (
            f"max |dlogit| {self.max_abs_logit_diff:.3g} (limit {max_limit:.3g}), mean {self.mean_abs_logit_diff:.3g} (limit {mean_limit:.3g}), "
            f"top-1 agreement {self.top1_agreement:.1%} (at least {min_top1:.0%}) over {self.positions} positions of {self.examples} examples ({self.dtype})"
        )


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def verification_inputs(
    run: RunFolder, tokenizer, chat_template: str | None, n: int
) -> list[list[int]]:
    """Token ids of the first n held-out examples, tokenized as the run tokenized them (cut to max_length)."""
    fmt, max_length = run.lock.data.format, run.lock.data.max_length
    inputs = []
    for record in held_out(run, n).records:
        value = record.value
        if fmt == "preference":
            ids, _ = prepare.tokenize_prompt_completion(
                tokenizer, chat_template, value["prompt"], value["chosen"]
            )
        else:
            ids, _ = prepare.tokenize_record(
                tokenizer, chat_template, fmt, value, False
            )
        inputs.append(ids[:max_length])
    if not inputs:
        raise MergeFailed("the run's data has no examples to verify the merge on")
    return inputs


def logits_of(model, inputs: list[list[int]]) -> list:
    """Logits of every position of every example, as float32 on the CPU (one example at a time: no padding)."""
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        return [
            model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu()
            for ids in inputs
        ]


def compare_logits(reference: list, candidate: list, dtype: str) -> Verification:
    """How far the candidate's logits are from the reference's, judged by the tolerance for `dtype`."""
    if dtype not in TOLERANCE:
        raise MergeFailed(
            f"no tolerance is defined for merged weights in {dtype}; expected one of {sorted(TOLERANCE)}"
        )
    max_diff = total = scale = 0.0
    count = agree = positions = 0
    for ref, cand in zip(reference, candidate, strict=True):
        diff = (ref - cand).abs()
        max_diff = max(max_diff, diff.max().item())
        total += diff.sum().item()
        count += diff.numel()
        agree += (ref.argmax(-1) == cand.argmax(-1)).sum().item()
        positions += ref.shape[0]
        scale = max(scale, ref.abs().max().item())
    return Verification(
        len(reference),
        positions,
        max_diff,
        total / count,
        agree / positions,
        scale,
        dtype,
    )


def verify(
    reference_model, candidate_model, inputs: list[list[int]], dtype: str
) -> Verification:
    """Compare two models' logits on the same inputs (the trained model first)."""
    return compare_logits(
        logits_of(reference_model, inputs), logits_of(candidate_model, inputs), dtype
    )


def _generation_config(base, tokenizer, chat_template: str | None):
    config = copy.deepcopy(base)
    config.eos_token_id = stop_token_ids(tokenizer, chat_template)
    config.pad_token_id = tokenizer.pad_token_id
    return config


def _write_tokenizer(folder: Path, tokenizer, template_file: Path | None) -> None:
    tokenizer.save_pretrained(str(folder))
    if template_file is not None:  # the locked bytes, whatever the tokenizer wrote
        (folder / CHAT_TEMPLATE_NAME).write_bytes(template_file.read_bytes())


def check_servable(folder: Path, template_file: Path | None) -> None:
    """merged/ must load in vLLM as it is: safetensors weights, a plain config, no adapter, no pickles."""
    problems = []
    config_path = folder / "config.json"
    if not config_path.is_file():
        problems.append("there is no config.json")
    elif "quantization_config" in json.loads(config_path.read_text(encoding="utf-8")):
        problems.append("config.json still has a quantization_config")
    if not list(folder.glob("*.safetensors")):
        problems.append("there are no safetensors weights")
    if (folder / "adapter_config.json").exists():
        problems.append("it holds an adapter (adapter_config.json)")
    problems += [
        f"it holds a pickle ({p.name})" for p in folder.iterdir() if p.suffix in PICKLES
    ]
    if (
        template_file is not None
        and (folder / CHAT_TEMPLATE_NAME).read_bytes() != template_file.read_bytes()
    ):
        problems.append("chat_template.jinja differs from the locked one")
    if problems:
        raise MergeFailed(f"the merged folder is not servable: {'; '.join(problems)}")


def _merge_adapter(
    run: RunFolder, tmp: Path, place: Placement, n: int, step: Callable[[str], None]
) -> Verification:
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(run)
    chat_template, template_file = locked_chat_template(run)
    inputs = verification_inputs(run, tokenizer, chat_template, n)
    step(
        "loading the base model in 4 bits"
        if run.quantized
        else "loading the base model"
    )
    tuned = load_tuned(run, place, load_base(run, place))
    step(f"computing the trained model's logits on {len(inputs)} examples")
    reference = logits_of(tuned, inputs)
    dtype = place.compute_dtype if run.quantized else place.dtype
    if run.quantized:
        step("dequantizing the 4-bit base")
        tuned = attach_adapter(run, dequantize(tuned.unload(), place))
    step("merging the adapter")
    merged = tuned.merge_and_unload(safe_merge=True)
    merged.generation_config = _generation_config(
        merged.generation_config, tokenizer, chat_template
    )
    step("writing the merged model")
    merged.save_pretrained(str(tmp))
    _write_tokenizer(tmp, tokenizer, template_file)
    del merged, tuned
    check_servable(tmp, template_file)
    step("verifying the merged model")
    candidate = (
        AutoModelForCausalLM.from_pretrained(
            str(tmp), dtype=dtype, use_safetensors=True
        )
        .to(place.device)
        .eval()
    )
    return compare_logits(reference, logits_of(candidate, inputs), dtype_name(dtype))


def _copy_full(
    run: RunFolder, tmp: Path, place: Placement, step: Callable[[str], None]
) -> MergeCheck:
    from transformers import AutoConfig, GenerationConfig

    step("copying the full model")
    tokenizer = load_tokenizer(run)
    chat_template, template_file = locked_chat_template(run)
    tmp.mkdir()
    for path in sorted(run.final.iterdir()):
        if path.is_file() and path.suffix not in PICKLES:
            shutil.copy2(path, tmp / path.name)
    if (run.final / "generation_config.json").is_file():
        base = GenerationConfig.from_pretrained(str(run.final))
    else:
        base = GenerationConfig.from_model_config(
            AutoConfig.from_pretrained(str(run.final))
        )
    _generation_config(base, tokenizer, chat_template).save_pretrained(str(tmp))
    if template_file is not None:
        (tmp / CHAT_TEMPLATE_NAME).write_bytes(template_file.read_bytes())
    check_servable(tmp, template_file)
    return MergeCheck(
        status="not needed",
        reason="full fine-tuning saved every weight; merged/ is a copy of final/",
        examples=0,
        positions=0,
        max_abs_logit_diff=None,
        mean_abs_logit_diff=None,
        top1_agreement=None,
        tolerance=None,
        dtype=dtype_name(place.dtype),
        path=MERGED,
    )


def replace_folder(src: Path, dest: Path) -> None:
    """Rename src to dest, replacing whatever dest was."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}{OLD_INFIX}{os.getpid()}")
        dest.rename(old)
        src.rename(dest)
        shutil.rmtree(old)
    else:
        src.rename(dest)


def remove_folder(folder: Path) -> None:
    """Delete a folder so that a kill midway never leaves it half there: renamed aside first, then deleted."""
    aside = folder.with_name(f".{folder.name}{OLD_INFIX}{os.getpid()}")
    folder.rename(aside)
    shutil.rmtree(aside)


def remove_leftovers(run_dir: Path) -> None:
    """Delete what a merge that was killed left: the folder it was building (.merged.tmp-<pid>/) and a merged/ or
    merged.rejected/ it had renamed aside to replace or remove (.merged.old-<pid>/). A merge still running keeps its own."""
    for prefix in (MERGE_TMP_PREFIX, f".{MERGED}{OLD_INFIX}", f".{MERGE_REJECTED}{OLD_INFIX}"):
        for leftover in run_dir.glob(prefix + "*"):
            pid = leftover.name[len(prefix):]
            if not (pid.isdigit() and is_alive(int(pid))):
                shutil.rmtree(leftover)


@dataclass(frozen=True)
class MergeResult:
    path: Path  # merged/ (or merged.rejected/ when it failed)
    record: MergeCheck  # what run.json holds under "merge"
    verification: Verification | None  # None for full fine-tuning


def merge_run(
    run_dir: Path, examples: int = 4, step: Callable[[str], None] | None = None
) -> MergeResult:
    """Write RUN/merged/ and record the verification in run.json. Raises MergeFailed (after recording it)
    when the merged model does not reproduce the trained one, and RunFolderError for an unfinished run."""
    step = step or (lambda _: None)
    if examples < 1:
        raise ValueError("examples must be at least 1")
    run = open_run(run_dir)
    refusal = run.lock.method.merge_refusal
    if refusal:
        used = "serve it as it is with `ftc serve`" if run.lock.method.serve_as else "score it with `ftc eval`"
        raise MergeFailed(f"{run_dir} cannot be merged: {refusal}. Nothing was written; {used}")
    place = placement(run.lock)
    remove_leftovers(run_dir)
    tmp = run_dir / f"{MERGE_TMP_PREFIX}{os.getpid()}"
    try:
        if not run.adapter:
            record = _copy_full(run, tmp, place, step)
            verification = None
        else:
            verification = _merge_adapter(run, tmp, place, examples, step)
            record = verification.record(MERGED if verification.passed else MERGE_REJECTED)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verification is not None and not verification.passed:
        replace_folder(tmp, run_dir / MERGE_REJECTED)
        if (run_dir / MERGED).exists():
            remove_folder(run_dir / MERGED)  # run.json no longer vouches for it
        update_record(run_dir, merge=record)
        raise MergeFailed(
            f"the merged model does not reproduce the trained one: {verification.summary()}. "
            f"It was kept in {run_dir / MERGE_REJECTED} for inspection; nothing was written to {run_dir / MERGED}"
        )
    replace_folder(tmp, run_dir / MERGED)
    if (run_dir / MERGE_REJECTED).exists():
        remove_folder(run_dir / MERGE_REJECTED)  # from an earlier attempt; this one passed
    update_record(run_dir, merge=record)
    return MergeResult(run_dir / MERGED, record, verification)
