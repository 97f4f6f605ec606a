"""Generation throughput of `ftc serve` (vLLM) against plain transformers, on the CPU, for a batch of 16 requests.

One run measures both, one after the other so that they never share the cores:
  1. vLLM started as `ftc serve` starts it (float32, eager, its default CPU binding), 16 chat requests sent at
     once through /v1/chat/completions, each asked for exactly --tokens new tokens (ignore_eos), greedy;
  2. transformers' generate on the same 16 prompts (rendered with the chat template) as one left-padded batch,
     greedy, exactly --tokens new tokens, float32, torch's default threads.
Each side gets a warm-up round, then --rounds timed rounds; the median round is reported as generated tokens
per second of wall time, and the ratio vLLM / transformers. --bind-all-cores also measures vLLM with its
OpenMP threads on every core (VLLM_CPU_OMP_THREADS_BIND=0-N; by default vLLM keeps one core of a small machine
for its API server).

The model: MODEL_DIR if given; else the newest verified runs/quickstart/*/merged (SmolLM2-135M tuned); else
a tiny random Llama (tests/tiny.py, weights std 0.2). The prompts are the quickstart's held-out tickets.

    .venv/bin/python bench/serve_throughput.py [MODEL_DIR] [--tokens 64] [--rounds 3] [--bind-all-cores]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICKETS = REPO / "specs" / "data" / "ticket_triage" / "val.jsonl"
N = 16


def pick_model(tmp: Path) -> tuple[Path, str]:
    from ftc.runtime.runfolder import MERGED, read_record, run_folders

    for run in reversed(run_folders(REPO, "quickstart")):
        merged, check = run / MERGED, read_record(run).merge
        if merged.is_dir() and check is not None and check.status == "verified":
            return merged, f"SmolLM2-135M quickstart, merged ({merged.relative_to(REPO)})"
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from tiny import make_tiny_llama
    from transformers import AutoModelForCausalLM

    folder = make_tiny_llama(tmp / "tiny")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    model.save_pretrained(folder)
    return folder, "tiny random Llama (no merged quickstart run under runs/quickstart/)"


def prompts() -> list[list[dict]]:
    conversations = []
    for line in TICKETS.read_text(encoding="utf-8").splitlines()[:N]:
        messages = json.loads(line)["messages"]
        conversations.append([m for m in messages if m["role"] != "assistant"])
    return conversations


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=900) as response:
        return json.loads(response.read())


def bench_vllm(model_dir: Path, conversations, tokens: int, rounds: int, tmp: Path, env_extra: dict[str, str]) -> dict:
    from transformers import AutoTokenizer

    from ftc.runtime.generate import stop_token_ids
    from ftc.runtime.serve.settings import Settings, check_port_free
    from ftc.runtime.serve.target import Target
    from ftc.runtime.serve.vllm import VllmServer, server_command, write_generation_config

    port = 8411
    check_port_free("127.0.0.1", port)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = model_dir / "chat_template.jinja"
    write_generation_config(model_dir, stop_token_ids(tokenizer, tokenizer.chat_template), tmp / "generation")
    target = Target("folder", str(model_dir), None, None, None, None, None, None, None, template if template.is_file() else None, False, tmp / "vllm.log")
    settings = Settings("127.0.0.1", port, "cpu", "float32", 512, "bench", None)
    argv, env = server_command(target, settings, tmp / "generation", None, None)
    env.update(env_extra)
    server = VllmServer(argv, env, tmp / "vllm.log", "127.0.0.1", port)
    began = time.monotonic()
    server.start()
    try:
        ready = server.wait_ready(900, lambda s, line: None)
        body = {"model": "bench", "temperature": 0, "max_tokens": tokens, "ignore_eos": True, "return_token_ids": True}

        def one(messages):
            return post(f"{server.url}/v1/chat/completions", {**body, "messages": messages})["choices"][0]["token_ids"]

        timings, outputs = [], None
        with ThreadPoolExecutor(N) as pool:
            for round_ in range(rounds + 1):
                t = time.monotonic()
                outputs = list(pool.map(one, conversations))
                elapsed = time.monotonic() - t
                generated = sum(len(o) for o in outputs)
                label = "warm-up" if round_ == 0 else f"round {round_}"
                print(f"  vLLM {label}: {generated} tokens in {elapsed:.2f}s = {generated / elapsed:,.0f} tok/s", flush=True)
                if round_:
                    timings.append(generated / elapsed)
    finally:
        server.stop()
    return {"tok_s": statistics.median(timings), "best": max(timings), "ready_s": ready, "started_s": time.monotonic() - began, "outputs": outputs}


def bench_transformers(model_dir: Path, conversations, tokens: int, rounds: int, threads: int | None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()
    texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in conversations]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    timings, outputs = [], None
    for round_ in range(rounds + 1):
        t = time.monotonic()
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
        elapsed = time.monotonic() - t
        generated = out[:, batch["input_ids"].shape[1] :]
        label = "warm-up" if round_ == 0 else f"round {round_}"
        print(f"  transformers {label}: {generated.numel()} tokens in {elapsed:.2f}s = {generated.numel() / elapsed:,.0f} tok/s", flush=True)
        if round_:
            timings.append(generated.numel() / elapsed)
        outputs = generated.tolist()
    return {"tok_s": statistics.median(timings), "best": max(timings), "threads": torch.get_num_threads(), "outputs": outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, help="a model folder (default: the newest merged quickstart run, else a tiny model)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--bind-all-cores", action="store_true", help="also measure vLLM with its threads on every core")
    parser.add_argument("--threads", type=int, action="append", help="transformers' torch threads (repeat to measure several; default: torch's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftc-bench-") as tmp:
        tmp = Path(tmp)
        model_dir, label = (args.model, str(args.model)) if args.model else pick_model(tmp)
        conversations = prompts()
        print(f"model: {label}\n{N} requests x {args.tokens} new tokens, greedy, float32, {os.cpu_count()} CPUs", flush=True)
        print("vLLM (as `ftc serve` starts it):", flush=True)
        vllm = bench_vllm(model_dir, conversations, args.tokens, args.rounds, tmp, {})
        print(f"  ready after {vllm['ready_s']:.0f}s", flush=True)
        bound = None
        if args.bind_all_cores:
            print(f"vLLM, threads bound to cores 0-{os.cpu_count() - 1}:", flush=True)
            bound = bench_vllm(model_dir, conversations, args.tokens, args.rounds, tmp, {"VLLM_CPU_OMP_THREADS_BIND": f"0-{os.cpu_count() - 1}"})
        hf = []
        for threads in args.threads or [None]:
            print(f"transformers (one left-padded batch of 16, {threads or 'default'} threads):", flush=True)
            hf.append(bench_transformers(model_dir, conversations, args.tokens, args.rounds, threads))
    same = sum(a == b for a, b in zip(vllm["outputs"], hf[0]["outputs"]))
    print("\ngenerated tokens per second, median of the rounds (best):")
    rows = [("vLLM, as ftc serve runs it", vllm)] + [("vLLM, all cores bound", bound)] * bool(bound)
    rows += [(f"transformers, {h['threads']} thread(s)", h) for h in hf]
    for label, r in rows:
        print(f"  {label:<30} {r['tok_s']:8,.0f} ({r['best']:,.0f})")
    for h in hf:
        print(f"ratio vLLM / transformers ({h['threads']} thread(s)): {vllm['tok_s'] / h['tok_s']:.2f} (best: {vllm['best'] / h['best']:.2f})")
    print(f"identical sequences, vLLM versus transformers' padded batch: {same}/{N}")


if __name__ == "__main__":
    main()
