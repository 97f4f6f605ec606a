"""Loading a base model's weights, in one place for ftc and for every generated script.

ftc's runtime imports this file as a module (ftc.templates.load_model) to load the base exactly as the run
loaded it, for merging, evaluation and the parity gate. A generated script includes it from the
`# ---- ftc model loading` banner down, verbatim (compiler/build/render.py, `support`); the imports stay above
the banner and the script imports the same names in its own import block.
"""

import logging
import warnings
from functools import partial

from transformers import AutoModelForCausalLM, GgufConfig, modeling_gguf_pytorch_utils

# ---- ftc model loading (shared verbatim by ftc's runtime and every generated script) ----


def quiet_known_notices():
    """Silence, each by its library, module and message, the notices a user can do nothing about; every other
    warning still shows. The first two are logged when bitsandbytes is imported, which transformers' Trainer
    modules and peft do: ftc calls this before it imports them. A script calls it first thing in main(), after
    its import block, and filters the first one itself just above its third-party imports.
      - bitsandbytes (backends/cpu/ops.py), on a CPU with AVX512-BF16: it could not fetch an optional 4-bit
        matmul kernel from the hub (kernels-community) and uses its own. LoRA never calls it, and QLoRA on the
        CPU turns that bf16 path off (support_avx512bf16_for_cpu = False) to keep one weight layout.
      - kernels (_internals/hf_hub.py), the same fetch while the hub is offline (as ftc eval sets it): it skips
        the publisher check of that one repository, then finds no copy and bitsandbytes uses its own.
      - transformers (modeling_utils), FutureWarning: `is_gradient_checkpointing` is deprecated. peft reads the
        old name when it wraps the model; the value is right, and the name is theirs to change.
      - peft (utils/save_and_load.py), UserWarning on every adapter save: it found no config.json next to the
        base (a GGUF file, or a hub id while offline), so it assumes the vocabulary was not resized. ftc never
        resizes it: the adapter holds no embedding, as peft then assumes.
      - transformers (its deprecate_kwarg, shown at torch's Module call), FutureWarning at every forward pass of
        prefix tuning: `past_key_values` is deprecated. peft hands the learned prefix over under the old name;
        transformers still takes it, and the name is peft's to change.
      - peft (tuners/tuners_utils.py), RuntimeWarning whenever an AdaLoRA adapter is loaded: its rank_pattern keys
        (".lora_E", AdaLoRA's own format) "did not match any targeted module and were ignored". The generic check
        is wrong for AdaLoRA, whose loader then resizes every layer by that pattern itself.
      - transformers (modeling_utils), the LOAD REPORT of a reward model made from a causal LM: its one missing
        key is the new score head ("score.weight", initialised from the seed), which is what a reward model
        trains. A report with any other missing, unexpected or mismatched key still shows."""
    logging.getLogger("transformers.modeling_utils").addFilter(_not_new_score_head_report)
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_not_kernel_fetch_notice)
    logging.getLogger("kernels._internals.hf_hub").addFilter(_not_kernel_fetch_notice)
    warnings.filterwarnings(
        "ignore",
        message=r"`is_gradient_checkpointing` is deprecated",
        category=FutureWarning,
        module=r"transformers\.modeling_utils",
    )
    warnings.filterwarnings(
        "ignore",
        message=r"Could not find a config file in .* - will assume that the vocabulary was not modified",
        category=UserWarning,
        module=r"peft\.utils\.save_and_load",
    )
    warnings.filterwarnings(
        "ignore",
        message=r"`past_key_values` is deprecated and will be removed",
        category=FutureWarning,
        module=r"torch\.nn\.modules\.module",
    )
    warnings.filterwarnings(
        "ignore",
        message=r"The following rank_pattern keys did not match any targeted module and were ignored: "
        r"\['[^']*\.lora_E'",
        category=RuntimeWarning,
        module=r"peft\.tuners\.tuners_utils",
    )


BITSANDBYTES_KERNEL = "kernels-community/quantization-bitsandbytes"  # the optional CPU kernel bitsandbytes looks for
KERNEL_FETCH_NOTICES = (
    "Failed to load CPU gemm_4bit_forward from kernels-community",
    f"Skipping publisher trust check for '{BITSANDBYTES_KERNEL}' because",
)


def _not_new_score_head_report(record):
    text = str(record.msg)
    if "ForSequenceClassification LOAD REPORT" not in text:
        return True
    keys = [line.split("|")[0].strip() for line in text.splitlines() if line.count("|") >= 2]
    return [key for key in keys if key and key != "Key" and not key.startswith("-")] != ["score.weight"]


def _not_kernel_fetch_notice(record):
    return not str(record.msg).startswith(KERNEL_FETCH_NOTICES)


def load_dense(where, dtype, attn, load_args, model_class=None, **settings):
    """A model with dense weights in `dtype`: AutoModelForCausalLM, or `model_class` with its `settings` (a reward
    model's one-label head). GGUF blocks are unpacked on load (GgufConfig(dequantize=True)); after that they are
    ordinary float weights, so the loading-only GGUF marker is removed to let them train."""
    model_class = model_class or AutoModelForCausalLM
    if load_args.get("gguf_file") is None:
        return model_class.from_pretrained(where, dtype=dtype, attn_implementation=attn, **load_args, **settings)
    # Unpacking draws a bar of one line per few tensors (272 for SmolLM2-135M) through tqdm directly, which
    # transformers' own switch (transformers.logging.disable_progress_bar) does not reach: off for this load only.
    bar = modeling_gguf_pytorch_utils.tqdm
    modeling_gguf_pytorch_utils.tqdm = partial(bar, disable=True)
    try:
        model = model_class.from_pretrained(
            where,
            dtype=dtype,
            attn_implementation=attn,
            quantization_config=GgufConfig(dequantize=True),
            **load_args,
            **settings,
        )
    finally:
        modeling_gguf_pytorch_utils.tqdm = bar
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    return model
