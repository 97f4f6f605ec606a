"""[export]: the quantized files `ftc export RUN` writes from merged/, and the parity gate each must pass.

Formats, by family:
  - GGUF (llama.cpp, Ollama): f16, q8_0, q4_0, q4_1, written by ftc's own writer on the `gguf` package for the
    architectures in GGUF_ARCHITECTURES; the k-quants (q4_k_m and the like) through llama-cpp-python's quantizer,
    when that optional extra is installed.
  - compressed-tensors (vLLM): w8a8 (int8 weights per channel, int8 activations per token, dynamic) and w4a16
    (int4 weights in groups, 16-bit activations).

The gate compares each export with merged/ on held-out examples: top-1 agreement of the next-token logits over
every position, the task metrics of `ftc eval` on greedy answers, and the file size. Defaults per format are in
GATE_DEFAULTS, with the measurements they were set from; [export.gate.<format>] overrides them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from ftc.compiler.schema import SpecModel

if TYPE_CHECKING:
    from ftc.compiler.diagnostics import Diagnostic
    from ftc.compiler.plan.model import Plan
    from ftc.compiler.spec.validate import LoadedSpec

GGUF_FORMATS = ("f16", "q8_0", "q4_0", "q4_1")  # ftc's writer
K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")  # llama.cpp's
COMPRESSED_FORMATS = ("w8a8", "w4a16")
FORMATS = (*GGUF_FORMATS, *K_QUANTS, *COMPRESSED_FORMATS)
GGUF_ARCHITECTURES = ("LlamaForCausalLM",)  # what the GGUF writer maps (tensor names, q/k permutation)
LLAMA_CPP_EXTRA = "llama-cpp-python (CMAKE_ARGS=-DGGML_NATIVE=OFF pip install -e '.[llama-cpp]')"

# format -> (min_top1, max_metric_drop): the share of positions whose next token must agree with merged/, and how far
# any task metric may fall below merged/'s on the same examples. Measured on the quickstart's merged SmolLM2-135M
# (bench/export.py, 60 held-out tickets, top-1 over every position): f16 99.9%, q8_0 97.8%, q6_k 94.6%, w8a8 89.5%
# (round-to-nearest; its int8 activations are most of the drift), q4_k_m 88.0%, q5_k_m 76.0%, q4_0 66.9%, w4a16
# 63.8%, q4_1 60.3%. (The k-quants need rows of 256, and SmolLM2's are 576 wide: llama.cpp falls back to Q5_0, Q5_1
# or Q8_0 for most tensors.) The defaults sit a few points under what a faithful export keeps at each width, so that
# one passes and a broken one (a corrupted scale) does not; a model this small keeps less than that at 4 and 5 bits.
GATE_DEFAULTS: dict[str, tuple[float, float]] = {
    "f16": (0.99, 0.05),
    "q8_0": (0.95, 0.10),
    "w8a8": (0.85, 0.15),
    "q6_k": (0.92, 0.10),
    "q5_k_s": (0.88, 0.15),
    "q5_k_m": (0.88, 0.15),
    "q4_0": (0.80, 0.25),
    "q4_1": (0.80, 0.25),
    "q4_k_s": (0.85, 0.20),
    "q4_k_m": (0.85, 0.20),
    "w4a16": (0.80, 0.25),
    "q3_k_s": (0.70, 0.30),
    "q3_k_m": (0.70, 0.30),
    "q3_k_l": (0.70, 0.30),
    "q2_k": (0.50, 0.50),
}

ExportFormat = Literal[FORMATS]  # type: ignore[valid-type]


def family(fmt: str) -> str:
    """'gguf' or 'compressed'."""
    return "compressed" if fmt in COMPRESSED_FORMATS else "gguf"


class ExportGate(SpecModel):
    min_top1: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Share of held-out positions whose top-1 token must match merged/'s."
    )
    max_metric_drop: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="How far each task metric (evaluation.metrics that are shares) may fall below merged/'s.",
    )
    max_size_mib: float | None = Field(default=None, gt=0, description="The export's largest acceptable size in MiB.")


class Export(SpecModel):
    formats: list[ExportFormat] = Field(
        min_length=1,
        description=(
            "What `ftc export` writes: GGUF f16, q8_0, q4_0, q4_1 (k-quants such as q4_k_m with llama-cpp-python), "
            "compressed-tensors w8a8 and w4a16 for vLLM."
        ),
    )
    examples: int = Field(
        default=16, ge=1, le=10_000, description="Held-out examples the parity gate compares the export with merged/ on."
    )
    gate: dict[ExportFormat, ExportGate] = Field(
        default_factory=dict, description="Per format, thresholds that replace the defaults (min_top1, max_metric_drop, max_size_mib)."
    )

    @field_validator("formats")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        repeated = sorted({f for f in value if value.count(f) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(repeated)} more than once")
        return value


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def check_export(loaded: LoadedSpec) -> Iterator[Diagnostic]:
    """Checks on the spec alone: the method must leave whole weights, and k-quants need llama-cpp-python."""
    from ftc.compiler.methods import METHODS

    export = loaded.spec.export
    if export is None:
        return
    refusal = METHODS[loaded.spec.method.kind].plan.merge_refusal
    if refusal:
        yield loaded.diag("export.formats", f"nothing to export: {refusal}", "remove [export]; serve the run with `ftc serve`")
    for i, fmt in enumerate(export.formats):
        if fmt in K_QUANTS and not llama_cpp_available():
            yield loaded.diag(f"export.formats.{i}", f"{fmt} is a llama.cpp k-quant, made by its quantizer, which needs {LLAMA_CPP_EXTRA}", "install it, or export q4_0, q4_1 or q8_0, which ftc writes itself")
    for fmt in sorted(set(export.gate) - set(export.formats)):
        yield loaded.diag(f"export.gate.{fmt}", f"a gate for {fmt}, which export.formats does not list", f"add {fmt!r} to formats, or remove this gate", severity="warning")


def check_export_plan(loaded: LoadedSpec, plan: Plan) -> Iterator[Diagnostic]:
    """Checks on the resolved plan: the GGUF writer maps the Llama family only."""
    export = loaded.spec.export
    if export is None:
        return
    architecture = plan.model.architecture
    for i, fmt in enumerate(export.formats):
        if family(fmt) == "gguf" and architecture not in GGUF_ARCHITECTURES:
            yield loaded.diag(f"export.formats.{i}", f"ftc writes GGUF for {', '.join(GGUF_ARCHITECTURES)}, and this model is {architecture}", "export w8a8 or w4a16 (compressed-tensors, for vLLM), which take any architecture vLLM loads")
            return
