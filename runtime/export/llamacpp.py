"""llama.cpp itself, through llama-cpp-python (an optional extra, built with CMAKE_ARGS=-DGGML_NATIVE=OFF: a default
build segfaults on AVX-512/AMX CPUs with every quantized GGUF, llama.cpp #20824):
  - the k-quants (q4_k_m and the like): llama.cpp's own quantizer turns the F16 GGUF ftc wrote into them;
  - a second reading of every GGUF export: llama.cpp computes the logits of the gate's held-out examples and
    tokenizes their prompts, so the gate sees what llama.cpp and Ollama will run, not only transformers' reading.
Without the extra, `ftc validate` refuses the k-quants, naming it, and the GGUF gate reads through transformers alone.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from importlib import metadata
from pathlib import Path
from typing import Any

K_FTYPES = {  # ftc's name -> llama.cpp's file type (llama.h, enum llama_ftype)
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "q3_k_s": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q3_k_l": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
}


class LlamaCppFailed(Exception):
    """llama.cpp could not quantize or read a file; the message says what it did."""


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def version() -> str:
    return metadata.version("llama_cpp_python")


def quantize(f16_file: Path, out_file: Path, fmt: str) -> dict[str, Any]:
    """Write `out_file` as the k-quant `fmt` of the F16 GGUF `f16_file` (metadata, template and tokenizer kept)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, K_FTYPES[fmt])
    params.nthread = os.cpu_count() or 1
    code = llama_cpp.llama_model_quantize(str(f16_file).encode(), str(out_file).encode(), ctypes.byref(params))
    if code != 0 or not Path(out_file).is_file():
        raise LlamaCppFailed(f"llama.cpp's quantizer failed on {f16_file} ({fmt}, status {code})")
    return {"method": f"llama.cpp's {fmt.upper()} quantizer (llama-cpp-python {version()}), from an F16 GGUF ftc wrote"}


def read(path: Path, inputs: list[list[int]], texts: list[str]) -> tuple[list[Any], list[list[int]]]:
    """llama.cpp's logits at every position of each input (float32 tensors, as merge.logits_of gives them), and its
    token ids for each text (no BOS added, special tokens parsed: as the chat template renders them)."""
    import numpy as np
    import torch
    from llama_cpp import Llama

    context = max(len(ids) for ids in inputs) + 8
    llm = Llama(model_path=str(path), n_ctx=context, n_batch=context, logits_all=True, verbose=False, seed=0, n_threads=os.cpu_count() or 1)
    try:
        logits = []
        for ids in inputs:
            llm.reset()
            llm.eval(ids)
            logits.append(torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32)))
        tokens = [llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) for text in texts]
    finally:
        llm.close()
    return logits, tokens
