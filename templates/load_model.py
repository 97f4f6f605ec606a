"""Loading a base model's weights, in one place for ftc and for every generated script.

ftc's runtime imports this file as a module (ftc.templates.load_model) to load the base exactly as the run
loaded it, for merging, evaluation and the parity gate. A generated script includes it from the
`# ---- ftc model loading` banner down, verbatim (compiler/build/render.py, `support`); the imports stay above
the banner and the script imports the same names in its own import block.
"""

from transformers import AutoModelForCausalLM, GgufConfig

# ---- ftc model loading (shared verbatim by ftc's runtime and every generated script) ----


def load_dense(where, dtype, attn, load_args):
    """A model with dense weights in `dtype`. GGUF blocks are unpacked on load (GgufConfig(dequantize=True));
    after that they are ordinary float weights, so the loading-only GGUF marker is removed to let them train."""
    if load_args.get("gguf_file") is None:
        return AutoModelForCausalLM.from_pretrained(where, dtype=dtype, attn_implementation=attn, **load_args)
    model = AutoModelForCausalLM.from_pretrained(
        where, dtype=dtype, attn_implementation=attn, quantization_config=GgufConfig(dequantize=True), **load_args
    )
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    return model
