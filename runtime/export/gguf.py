"""Write a merged Llama-family model (a Hugging Face folder) as one GGUF file, for llama.cpp and the tools built
on it (Ollama, LM Studio), with nothing but the `gguf` package, numpy, safetensors and transformers.

What goes in:
  - Metadata under llama.cpp's keys: the shape of the model (context, embedding and feed-forward lengths,
    blocks, query and key/value heads, head size, rope base, RMS epsilon), the vocabulary size, and a file type
    that names the quantization.
  - The tokenizer: the byte-level BPE vocabulary with token types (special added tokens CONTROL, other added
    tokens USER_DEFINED, ids the tokenizer lacks up to the vocabulary size "[PAD<id>]" UNUSED), its merges,
    the BOS/UNK/PAD ids it has, the EOS ids given (the first as EOS, a second as EOT, a third as EOM: llama.cpp
    stops at each), whether it adds BOS/EOS (found by encoding a word), and the locked chat template. Only
    byte-level BPE is written; anything else is refused (GgufRefused) with the reason.
  - `tokenizer.ggml.pre`, llama.cpp's name for how text is split before BPE, chosen as the first of "smollm",
    "gpt-2", "llama-bpe" whose split rules, given to a copy of the tokenizer, reproduce its token ids exactly
    on a probe text (PROBE: digits, contractions, numerals, spaces, newlines, non-Latin scripts, code). None
    matching is a refusal: llama.cpp would tokenize differently. "smollm" (every numeral its own piece, and no
    space clean-up when decoding) is tried first, for vocabularies that never join a numeral to anything.
    SmolLM2's comes out "gpt-2", not the "smollm" that llama.cpp's converter gives it: its HF tokenizer joins a
    space to the Arabic-Indic digit in " ١٢٣" ("ĠÙ"), which "smollm" splits off; "gpt-2" matches it exactly.
    transformers reads both back with GPT-2's split.
  - Tensors under llama.cpp's names (gguf.get_tensor_name_map), in block order. q and k projections are
    permuted as llama.cpp's converter does (rows of each head interleaved for its rope); transformers' GGUF
    reader undoes it. Tied embeddings are written once, as token_embd (llama.cpp and transformers both use it
    as the output when output.weight is absent). 1-D tensors (norms) stay F32; 2-D weights take the chosen
    type when their rows are a whole number of 32-value blocks, and F16 otherwise, each such tensor named in
    the result's "fallback_f16".

The same inputs give the same bytes: no timestamps, fixed key and tensor order. The file is written next to
its destination under a hidden name and renamed into place when complete.

Measured (CPU, 2 cores; read back with load_gguf, logits against the HF model in float32). SmolLM2-135M
quickstart merge (float32, tied, 9 heads / 3 KV heads), 4 chat prompts with the locked template, 173 positions,
max |logit| 41.6; transformers' loader takes 13-15 s to read any of them back:
    type   size      write        top-1    max |dlogit|   mean |dlogit|
    f16    258 MiB   1.8 - 4.5 s  100%     0.060          0.0084
    q8_0   138 MiB   1.9 s        96.5%    1.85           0.21
    q4_0    74 MiB   1.8 - 2.0 s  59.5%    26.7           3.67
    q4_1    82 MiB   2.0 - 2.3 s  62.4%    25.6           3.15
The same numbers come from quantizing and dequantizing the HF weights in memory (gguf.quants), so the drift is
the quantization's, not the writer's; q4_0/q4_1 are that lossy on a model this small (keeping the tied
embedding at q8_0 moved q4_0's top-1 only to 63%). No tensor fell back to F16 (576 and 1536 are multiples of 32).
The tiny test Llama: f16 max |dlogit| 4.6e-4, q8_0 1.2e-2, top-1 100% for both (see the tests).
"""

from __future__ import annotations

import json
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftc.compiler.spec.export import GGUF_ARCHITECTURES as SUPPORTED_ARCHITECTURES  # config.architectures[0] it writes
from ftc.compiler.spec.export import GGUF_FORMATS as GGUF_TYPES  # what this writer produces

BLOCK = 32  # values per quantization block of q8_0, q4_0 and q4_1; a row must be a multiple to be quantized
_BLOCK_TENSORS = (
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
)
_SKIPPED = re.compile(r"rotary_emb\.inv_freq$")  # recomputed from the rope base; old checkpoints carry it

# llama.cpp's split rules (src/llama-vocab.cpp, llm_tokenizer_bpe) for the pre-tokenizer names written here.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {"smollm": (r"\p{N}", _GPT2_SPLIT), "gpt-2": (_GPT2_SPLIT,), "llama-bpe": (_LLAMA3_SPLIT,)}
PROBE = (
    "Hello world! It's 2024-12-07; we've got 3.14159 and 1,000,000 items (12345678 in all).\n\n"
    "  Two  spaces,\ttab\r\nCRLF line. I'M SURE YOU'LL SEE; they'd've known.\n"
    "Café naïve À É Î õ ü — «quotes» 日本語のテキスト 한국어 Ελληνικά русский ١٢٣ x²+y³=z½ 🙂🚀\n"
    "def f(x):\n    return {\"a\": [1, 2, 33, 444]}  # comment ''' \"\"\"\n\n\n   \n$USD (hello) [world] <tag>"
)


class GgufRefused(Exception):
    """The model cannot be written as GGUF; the message says why and what to do."""


@dataclass(frozen=True)
class _Source:
    """What inspection found: the shape of the model, its weights, and its tokenizer as GGUF wants it."""

    hparams: dict
    tensors: dict[str, tuple[Path, str]]  # GGUF name -> (safetensors file, HF name), in writing order
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int]  # bos / unk / pad, as the tokenizer has them
    add_bos: bool
    add_eos: bool


def gguf_refusal(model_dir: Path) -> str | None:
    """Why model_dir (a HF folder: config.json, safetensors, tokenizer) cannot be written, or None."""
    try:
        _inspect(Path(model_dir))
    except GgufRefused as refusal:
        return str(refusal)
    return None


def write_gguf(
    model_dir: Path, out_file: Path, quant: str, *, chat_template: str | None, eos_token_ids: list[int], name: str
) -> dict:
    """Write model_dir as one GGUF file of type `quant`; byte-identical output for the same inputs.

    Returns {"tensors": how many were written, "fallback_f16": GGUF names of 2-D tensors written as F16 because
    their rows are not a multiple of 32 (always empty for f16), "bytes": the file's size}.
    """
    import gguf

    if quant not in GGUF_TYPES:
        raise ValueError(f"GGUF type {quant!r} is not one this writer produces; choose one of {', '.join(GGUF_TYPES)}")
    source = _inspect(Path(model_dir))
    stops = _stop_ids(eos_token_ids, source.hparams["vocab_size"])
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
             "q4_0": gguf.GGMLQuantizationType.Q4_0, "q4_1": gguf.GGMLQuantizationType.Q4_1}[quant]
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}[quant]

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(f".{out_file.name}.partial")
    # A spooled temporary file keeps at most 256 MiB of tensors in memory before it spills to disk.
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA], use_temp_file=True)
    try:
        _add_metadata(writer, source, name, int(file_type), stops, chat_template)
        fallback = _add_tensors(writer, source, qtype)
        writer.write_header_to_file(partial)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out_file)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
    return {"tensors": len(source.tensors), "fallback_f16": fallback, "bytes": out_file.stat().st_size}


def load_gguf(out_file: Path, dtype=None):
    """(model, tokenizer) read back through transformers' GGUF loader (from_pretrained(dir, gguf_file=name)).

    dtype defaults to torch.float32; quantized weights are dequantized into it.
    """
    import torch
    from transformers import AutoTokenizer

    from ftc.templates.load_model import load_dense  # the GGUF loader's own bar stays off, as in every script

    out_file = Path(out_file).resolve()
    folder, file_name = str(out_file.parent), out_file.name
    model = load_dense(folder, dtype or torch.float32, None, {"gguf_file": file_name})
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    return model.eval(), tokenizer


def carried(path: Path) -> dict:
    """What a GGUF file tells llama.cpp about chatting: {"chat_template": str | None, "stop_ids": [EOS, EOT, EOM]}."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def value(key: str):
        field = reader.get_field(key)
        return None if field is None else field.contents()

    stops = [value(f"tokenizer.ggml.{name}_token_id") for name in ("eos", "eot", "eom")]
    return {"chat_template": value("tokenizer.chat_template"), "stop_ids": [int(i) for i in stops if i is not None]}


# --- inspection: everything that can be refused is refused here, before a byte is written -------------------


def _inspect(model_dir: Path) -> _Source:
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise GgufRefused(f"{model_dir} has no config.json; GGUF export needs a Hugging Face model folder")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    architecture = architectures[0] if architectures else None
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise GgufRefused(
            f"GGUF export supports {', '.join(SUPPORTED_ARCHITECTURES)}; this model is "
            f"{architecture or 'of no stated architecture'} (config.json architectures). "
            f"Serve it from the merged folder instead."
        )
    hparams = _hparams(model_dir)
    tensors = _tensor_plan(model_dir, hparams)
    return _Source(hparams=hparams, tensors=tensors, **_vocabulary(model_dir, hparams["vocab_size"]))


def _hparams(model_dir: Path) -> dict:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    rope = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise GgufRefused(
            f"rope scaling {rope_type!r} is not written by this GGUF exporter (llama.cpp needs extra keys or a "
            f"rope_freqs tensor for it); only plain rope is supported"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(cfg, flag, False):
            raise GgufRefused(f"config.json sets {flag}; this GGUF exporter writes Llama models without biases")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise GgufRefused(f"hidden_act is {cfg.hidden_act!r}; a Llama GGUF assumes silu")
    n_head = cfg.num_attention_heads
    return {
        "vocab_size": cfg.vocab_size,
        "context_length": cfg.max_position_embeddings,
        "embedding_length": cfg.hidden_size,
        "block_count": cfg.num_hidden_layers,
        "feed_forward_length": cfg.intermediate_size,
        "head_count": n_head,
        "head_count_kv": getattr(cfg, "num_key_value_heads", None) or n_head,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head,
        "rope_freq_base": float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))),
        "rms_eps": float(cfg.rms_norm_eps),
        "tied": bool(getattr(cfg, "tie_word_embeddings", False)),
    }


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [model_dir / n for n in names]
    if (model_dir / "model.safetensors").is_file():
        return [model_dir / "model.safetensors"]
    if any(model_dir.glob("pytorch_model*.bin")):
        raise GgufRefused(f"{model_dir} holds PyTorch .bin weights; GGUF export reads safetensors only")
    raise GgufRefused(f"{model_dir} holds no model.safetensors (or index); nothing to export")


def _tensor_plan(model_dir: Path, hp: dict) -> dict[str, tuple[Path, str]]:
    """GGUF name -> (file, HF name) for every weight, in writing order; refuses unknown, missing or misshapen ones."""
    import gguf
    from safetensors import safe_open

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp["block_count"])
    found: dict[str, tuple[Path, str]] = {}
    shapes: dict[str, list[int]] = {}
    unknown = []
    for path in _weight_files(model_dir):
        with safe_open(path, framework="pt") as f:
            for hf_name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                if _SKIPPED.search(hf_name) or (hp["tied"] and hf_name == "lm_head.weight"):
                    continue
                gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    unknown.append(hf_name)
                    continue
                found[gguf_name] = (path, hf_name)
                shapes[gguf_name] = list(f.get_slice(hf_name).get_shape())
    if unknown:
        raise GgufRefused(f"weights with no place in a Llama GGUF: {', '.join(sorted(unknown)[:8])}")
    order = ["token_embd.weight"]
    for block in range(hp["block_count"]):
        order += [f"blk.{block}.{t}.weight" for t in _BLOCK_TENSORS]
    order += ["output_norm.weight"] + ([] if hp["tied"] else ["output.weight"])
    missing = [n for n in order if n not in found]
    extra = sorted(set(found) - set(order))
    if missing or extra:
        raise GgufRefused(
            f"the weights do not form a plain Llama: missing {', '.join(missing[:8]) or 'none'}; "
            f"unexpected {', '.join(extra[:8]) or 'none'}"
        )
    for block in range(hp["block_count"]):
        for part, heads in (("attn_q", hp["head_count"]), ("attn_k", hp["head_count_kv"])):
            rows = shapes[f"blk.{block}.{part}.weight"][0]
            if rows != heads * hp["head_dim"] or hp["head_dim"] % 2:
                raise GgufRefused(
                    f"blk.{block}.{part} has {rows} rows, not {heads} heads x {hp['head_dim']} (even) head size"
                )
    return {n: found[n] for n in order}


def _vocabulary(model_dir: Path, vocab_size: int) -> dict:
    """The tokenizer as GGUF stores it; refuses all but byte-level BPE that llama.cpp splits the same way."""
    import gguf
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except Exception as error:  # noqa: BLE001 - a missing or broken tokenizer raises many kinds; say so, no traceback
        raise GgufRefused(f"the tokenizer in {model_dir} does not load: {error}") from None
    if not getattr(tok, "is_fast", False) or not hasattr(tok, "backend_tokenizer"):
        raise GgufRefused("GGUF export needs a fast (tokenizers) tokenizer; this one is not")
    spec = json.loads(tok.backend_tokenizer.to_str())
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    byte_level = (
        model.get("type") == "BPE"
        and not model.get("byte_fallback")
        and spec.get("normalizer") is None
        and "ByteLevel" in [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", [])]
    )
    if not byte_level:
        raise GgufRefused(
            f"the tokenizer is not byte-level BPE (model {model.get('type')}, normalizer "
            f"{(spec.get('normalizer') or {}).get('type')}, decoder {decoder.get('type')}); this exporter writes only "
            f"GPT-2-style byte-level vocabularies"
        )
    pre = _pre_tokenizer(tok)

    vocab = tok.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise GgufRefused(
            f"the tokenizer has ids up to {max(vocab.values())}, beyond the model's {vocab_size} embeddings"
        )
    by_id = {i: t for t, i in vocab.items()}
    added = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    merges = []
    for merge in model.get("merges") or []:
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if len(pair) != 2 or any(" " in part for part in pair):
            raise GgufRefused(f"merge {merge!r} is not a pair of byte-level tokens")
        merges.append(f"{pair[0]} {pair[1]}")

    special = {k: getattr(tok, f"{k}_token_id", None) for k in ("bos", "unk", "pad")}
    special = {k: v for k, v in special.items() if isinstance(v, int)}
    plain = tok("Hello", add_special_tokens=False)["input_ids"]
    full = tok("Hello")["input_ids"]
    add_bos = "bos" in special and len(full) > len(plain) and full[0] == special["bos"]
    add_eos = tok.eos_token_id is not None and len(full) > len(plain) and full[-1] == tok.eos_token_id
    return {"tokens": tokens, "token_types": [int(t) for t in types], "merges": merges, "pre": pre,
            "special_ids": special, "add_bos": add_bos, "add_eos": add_eos}


def _pre_tokenizer(tok) -> str:
    """The first llama.cpp pre-tokenizer name whose split rules give this tokenizer's ids on PROBE."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    spec = json.loads(tok.backend_tokenizer.to_str())
    levels = [spec.get("pre_tokenizer") or {}]
    levels += levels[0].get("pretokenizers") or []
    if any(p.get("type") == "ByteLevel" and p.get("add_prefix_space") for p in levels):
        raise GgufRefused("the tokenizer adds a prefix space (ByteLevel add_prefix_space); llama.cpp's BPE does not")
    wanted = tok.backend_tokenizer.encode(PROBE, add_special_tokens=False).ids
    for name, splits in PRE_TOKENIZERS.items():
        copy = Tokenizer.from_str(tok.backend_tokenizer.to_str())
        copy.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(s), behavior="isolated") for s in splits]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        if copy.encode(PROBE, add_special_tokens=False).ids == wanted:
            return name
    raise GgufRefused(
        f"none of llama.cpp's pre-tokenizers {', '.join(PRE_TOKENIZERS)} splits text as this tokenizer does "
        f"({levels[0].get('type')}); llama.cpp would tokenize prompts differently"
    )


def _stop_ids(eos_token_ids: list[int], vocab_size: int) -> list[int]:
    stops = list(dict.fromkeys(int(i) for i in eos_token_ids))
    if not stops:
        raise GgufRefused("no EOS token id given; a GGUF without one would never stop generating")
    if len(stops) > 3:
        raise GgufRefused(f"{len(stops)} stop ids {stops}; GGUF holds three (EOS, EOT, EOM)")
    if any(not 0 <= i < vocab_size for i in stops):
        raise GgufRefused(f"stop ids {stops} are not all within the vocabulary of {vocab_size}")
    return stops


# --- writing ---------------------------------------------------------------------------------------------


def _add_metadata(writer, source: _Source, name: str, file_type: int, stops: list[int], chat_template: str | None):
    import gguf

    hp = source.hparams
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(hp["vocab_size"])
    writer.add_context_length(hp["context_length"])
    writer.add_embedding_length(hp["embedding_length"])
    writer.add_block_count(hp["block_count"])
    writer.add_feed_forward_length(hp["feed_forward_length"])
    writer.add_rope_dimension_count(hp["head_dim"])
    writer.add_head_count(hp["head_count"])
    writer.add_head_count_kv(hp["head_count_kv"])
    writer.add_key_length(hp["head_dim"])
    writer.add_value_length(hp["head_dim"])
    writer.add_rope_freq_base(hp["rope_freq_base"])
    writer.add_layer_norm_rms_eps(hp["rms_eps"])

    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(source.pre)
    writer.add_token_list(source.tokens)
    writer.add_token_types(source.token_types)
    writer.add_token_merges(source.merges)
    if "bos" in source.special_ids:
        writer.add_bos_token_id(source.special_ids["bos"])
    writer.add_eos_token_id(stops[0])
    if len(stops) > 1:
        writer.add_eot_token_id(stops[1])
    if len(stops) > 2:
        writer.add_eom_token_id(stops[2])
    if "unk" in source.special_ids:
        writer.add_unk_token_id(source.special_ids["unk"])
    if "pad" in source.special_ids:
        writer.add_pad_token_id(source.special_ids["pad"])
    writer.add_add_bos_token(source.add_bos)
    writer.add_add_eos_token(source.add_eos)
    if chat_template is not None:
        writer.add_chat_template(chat_template)


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's converter's reordering of q/k rows: per head, the two rope halves interleaved."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _add_tensors(writer, source: _Source, qtype) -> list[str]:
    import gguf
    from safetensors import safe_open

    hp = source.hparams
    fallback = []
    with ExitStack() as stack:
        handles: dict[Path, object] = {}
        for gguf_name, (path, hf_name) in source.tensors.items():
            if path not in handles:
                handles[path] = stack.enter_context(safe_open(path, framework="pt"))
            data = handles[path].get_tensor(hf_name).float().numpy()  # bf16 and f16 sources widen exactly
            if ".attn_q." in gguf_name:
                data = _permute(data, hp["head_count"], hp["head_count"])
            elif ".attn_k." in gguf_name:
                data = _permute(data, hp["head_count"], hp["head_count_kv"])
            if data.ndim == 1:
                writer.add_tensor(gguf_name, np.ascontiguousarray(data, dtype=np.float32))
            elif qtype == gguf.GGMLQuantizationType.F16 or data.shape[-1] % BLOCK:
                if qtype != gguf.GGMLQuantizationType.F16:
                    fallback.append(gguf_name)
                writer.add_tensor(gguf_name, np.ascontiguousarray(data, dtype=np.float16))
            else:
                writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    return fallback
