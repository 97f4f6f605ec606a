"""The GPU benchmark's phases, one process each (bench/gpu.sh runs them with a timeout apiece).

    python bench/gpu_bench.py setup  --work DIR --out RESULT.json [--dry-run]
    python bench/gpu_bench.py run    --work DIR --out RESULT.json SIDE      (ftc-full, ftc-lora, baseline-lora, baseline-full)
    python bench/gpu_bench.py fail   --work DIR --out RESULT.json PHASE MESSAGE
    python bench/gpu_bench.py report --work DIR --out RESULT.json

setup builds a Llama with random weights from a config (no download; ~1.1B parameters: hidden 2048, 16 layers,
32 heads, 8 KV heads, MLP 8192, vocab 32000), saved as bf16 safetensors with the byte-level BPE tokenizer of
tests/tiny.py (its 516 ids are a subset of the 32000). It writes synthetic chats (bench/train_throughput.py's
lognormal lengths) and compiles two specs with ftc's compiler API, LoRA and full fine-tuning, max_length 2048,
packing on. Each `run` starts one training process under bench/token_probe.py: ftc's generated train.py as
`ftc run` starts it, or bench/baseline_trainer.py (every example padded to 2048) with the plan's settings. After
each phase RESULT.json is rewritten whole, so a phase that fails or times out leaves the others' numbers.

--dry-run takes the same path on the CPU in well under a few minutes: a tiny Llama (hidden 128, 2 layers, vocab
1024), max_length 256, a few steps, and writes the same JSON structure (MFU is null without a known peak).

FLOPs per real token (stated in the JSON): full fine-tuning 6N + 12*L*h*s, LoRA 4N + 12*L*h*s, with N the
parameters of the base model's matmuls (every nn.Linear, lm_head included; not the embedding lookup), L layers,
h hidden size, s = max_length (the PaLM convention: attention as if each token saw a full row, causal halving
ignored). LoRA has no weight gradients for the frozen N (2N forward + 2N for the input gradients); its adapter
FLOPs are left out. MFU = real tokens/s x FLOPs per token / the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import train_throughput as tt  # noqa: E402

SIDES = ("ftc-full", "ftc-lora", "baseline-lora", "baseline-full")
# Dense bf16 peak FLOP/s by device name (NVIDIA data sheets, SXM parts).
PEAK_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12}
TARGETS = {"mfu_full": 0.40, "ratio_vs_baseline": 2.0, "memory_estimate_error": 0.15}
SETTINGS = {
    "gpu": {"max_length": 2048, "micro_batch_size": 4, "steps": 14, "warmup_steps_untimed": 3, "examples": 1500,
            "model": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                      "num_key_value_heads": 8, "vocab_size": 32000}},
    "dry-run": {"max_length": 256, "micro_batch_size": 2, "steps": 3, "warmup_steps_untimed": 1, "examples": 200,
                "model": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "num_key_value_heads": 2, "vocab_size": 1024}},
}
LEARNING_RATE = {"lora": 2e-4, "full": 2e-5}  # the seed guide's values


def load(out: Path) -> dict:
    return json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}


def save(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out)


def build_model(folder: Path, shape: dict) -> dict:
    """A Llama with random weights (std 0.02, seed 0), bf16 safetensors, and tests/tiny.py's tokenizer."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(REPO / "tests"))
    from tiny import make_tokenizer

    tokenizer = make_tokenizer()
    config = LlamaConfig(
        **shape, max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    info = {"parameters": sum(p.numel() for p in model.parameters()), "matmul_parameters": linear, **shape}
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return info


def flops_per_token(info: dict, method: str, seq: int) -> float:
    n, layers, hidden = info["matmul_parameters"], info["num_hidden_layers"], info["hidden_size"]
    return (6 if method == "full" else 4) * n + 12 * layers * hidden * seq


def setup(args) -> None:
    mode = "dry-run" if args.dry_run else "gpu"
    s = SETTINGS[mode]
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    result = {"mode": mode, "phases": {}, "targets": TARGETS, "settings": {k: v for k, v in s.items() if k != "model"}}
    save(args.out, result)
    import torch

    result["machine"] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
        "packages": _versions("transformers", "trl", "peft", "accelerate", "datasets", "ftc"),
    }
    t = time.perf_counter()
    result["model"] = build_model(work / "model", s["model"])
    result["model"]["build_seconds"] = round(time.perf_counter() - t, 1)
    tokenizer = tt.load_tokenizer(str(work / "model"))
    tt.write_chats(work / "train.jsonl", s["examples"], tt.tokens_per_word(tokenizer), scale=s["max_length"] / 2048)
    result["data"] = tt.length_stats(tt.token_lengths(tokenizer, work / "train.jsonl"), s["max_length"])
    builds = {}
    for method in ("full", "lora"):
        t = time.perf_counter()
        spec = tt.spec_text(f"gpu-{method}", "model", method, s["steps"], s["micro_batch_size"], 1, LEARNING_RATE[method],
                            max_length=s["max_length"])
        build = tt.compile_ftc(work, spec, f"spec-{method}.toml")
        builds[method] = {
            "build": str(build.directory.relative_to(work)),
            "compile_seconds": round(time.perf_counter() - t, 1),
            "estimates": build.lock.estimates.model_dump(mode="json"),
            "packed_sequences": build.lock.data.splits["train"].packed_sequences,
            "warnings": [w.message for w in build.warnings],
        }
    result["builds"] = builds
    result["flops_per_token"] = {
        "formula": "full: 6*N + 12*L*h*s; lora: 4*N + 12*L*h*s; N = matmul parameters of the base model (nn.Linear, "
                   "lm_head included), L layers, h hidden size, s = max_length; per real (non-padding) token",
        "full": flops_per_token(result["model"], "full", s["max_length"]),
        "lora": flops_per_token(result["model"], "lora", s["max_length"]),
    }
    result["phases"]["setup"] = "ok"
    save(args.out, result)


def _versions(*names: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def run_side(args) -> None:
    result = load(args.out)
    if result.get("phases", {}).get("setup") != "ok":
        raise SystemExit("setup did not finish; nothing to run")
    side = args.side
    kind, method = side.split("-")
    s = result["settings"]
    work = args.work
    lock = json.loads((work / result["builds"][method]["build"] / "ftc.lock.json").read_text(encoding="utf-8"))
    if kind == "ftc":
        build_dir = work / result["builds"][method]["build"]
        argv = [str(build_dir / "train.py"), "--output-dir", str(work / "runs" / side), "--no-progress-bar"]
    else:
        argv = tt.baseline_command(str(work / "model"), work / "train.jsonl", work / "runs" / side, lock, method)
    probe = tt.run_probed(side, argv, s["steps"], work)
    summary = tt.summarize(probe, warmup=s["warmup_steps_untimed"])
    measured = summary["peak_memory_bytes"]
    estimate = lock["estimates"]["peak_memory_gib"]
    fpt = result["flops_per_token"][method]
    peak = args.peak_flops or next((v for k, v in PEAK_FLOPS.items() if k in result["machine"]["device"]), None)
    entry = {
        "real_tokens_per_second": round(summary["real_tokens_per_second"], 1),
        "slots_per_second": round(summary["slots_per_second"], 1),
        "real_share": summary["real_share"],
        "seconds_per_step": summary["seconds_per_step"],
        "timed_steps": summary["timed_steps"],
        "first_step_seconds": summary["first_step_seconds"],
        "losses": summary["losses"],
        "micro_batch_shapes": summary["micro_batch_shapes"],
        "trainable_parameters": summary["trainable_parameters"],
        "tflops_per_second": float(f"{summary['real_tokens_per_second'] * fpt / 1e12:.4g}"),
        "mfu": round(summary["real_tokens_per_second"] * fpt / peak, 4) if peak else None,
        "peak_flops": peak,
        "wall_s": summary["wall_s"],
    }
    if kind == "ftc":
        entry["memory"] = {
            "measured_gib": round(measured / 2**30, 3) if measured is not None else None,
            "measured_kind": "torch.cuda.max_memory_allocated" if measured is not None else None,
            "estimate_gib": estimate,
            "estimate_breakdown_gib": lock["estimates"].get("breakdown_gib"),
            "relative_error": round(estimate / (measured / 2**30) - 1, 3) if measured else None,
        }
    elif measured is not None:
        entry["memory"] = {"measured_gib": round(measured / 2**30, 3), "measured_kind": "torch.cuda.max_memory_allocated"}
    result = load(args.out)  # written by nobody else meanwhile; reread so that a phase never loses another's keys
    result.setdefault("runs", {})[side] = entry
    result["phases"][side] = "ok"
    save(args.out, result)
    print(f"{side}: {entry['real_tokens_per_second']:,.0f} real tok/s, {entry['seconds_per_step']}s/step, mfu {entry['mfu']}, "
          f"memory {entry.get('memory')}", flush=True)


def fail(args) -> None:
    result = load(args.out)
    result.setdefault("phases", {})[args.phase] = f"failed: {args.message}"
    save(args.out, result)


def report(args) -> None:
    result = load(args.out)
    runs = result.get("runs", {})
    summary = {}
    for method in ("full", "lora"):
        ftc, base = runs.get(f"ftc-{method}"), runs.get(f"baseline-{method}")
        if ftc and base:
            summary[f"ratio_vs_baseline_{method}"] = round(ftc["real_tokens_per_second"] / base["real_tokens_per_second"], 2)
        if ftc:
            summary[f"mfu_{method}"] = ftc["mfu"]
            memory = ftc.get("memory") or {}
            summary[f"memory_estimate_error_{method}"] = memory.get("relative_error")
    checks = {}
    if summary.get("mfu_full") is not None:
        checks["mfu_full >= 0.40"] = summary["mfu_full"] >= TARGETS["mfu_full"]
    for method in ("full", "lora"):
        ratio = summary.get(f"ratio_vs_baseline_{method}")
        if ratio is not None:
            checks[f"ratio_vs_baseline_{method} >= 2"] = ratio >= TARGETS["ratio_vs_baseline"]
        error = summary.get(f"memory_estimate_error_{method}")
        if error is not None:
            checks[f"|memory_estimate_error_{method}| <= 0.15"] = abs(error) <= TARGETS["memory_estimate_error"]
    summary["checks"] = checks
    summary["all_phases_ok"] = all(v == "ok" for v in result.get("phases", {}).values()) and len(result.get("phases", {})) == 1 + len(SIDES)
    result["summary"] = summary
    save(args.out, result)
    print(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("setup", "run", "fail", "report"):
        p = sub.add_parser(name)
        p.add_argument("--work", type=Path, required=True, help="folder for the model, data, builds and logs")
        p.add_argument("--out", type=Path, required=True, help="the result JSON, rewritten after every phase")
        if name == "setup":
            p.add_argument("--dry-run", action="store_true", help="the tiny model on the CPU, short sequences")
        if name == "run":
            p.add_argument("side", choices=SIDES)
            p.add_argument("--peak-flops", type=float, help="the device's dense bf16 peak FLOP/s, when its name is not known")
        if name == "fail":
            p.add_argument("phase")
            p.add_argument("message")
    args = parser.parse_args()
    {"setup": setup, "run": run_side, "fail": fail, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
