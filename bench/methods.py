"""Which method for this task? Every SFT-family method trained on the quickstart's tickets, measured through ftc.

Part one trains each of SFT_METHODS on the quickstart's data (SmolLM2-135M-Instruct, specs/data/ticket_triage) with
the same steps, batch, seed and data, each at the registry's learning rate (METHODS[kind].learning_rate(table)), with
its kind's defaults except that LoRA and QLoRA take the quickstart's [method] table and AdaLoRA its target_modules.
Each goes through ftc in a fresh project under --work: `ftc compile`, `run`, `eval RUN --max-examples N`, `merge RUN`,
`serve RUN` (parity gate; Ctrl-C once it serves). The numbers are ftc's: the lock (trainable parameters), events.jsonl
(real tokens/s after the first step), run.json (peak memory, last train loss, validation loss, merge, serve), eval.json
(json_valid, category accuracy, ROUGE-L; the LoRA run's also the untrained base's). Refusals are in ftc's words.

Part two (--preference): DPO, ORPO (ticket_triage_prefs) and KTO (ticket_triage_kto, the same pairs unpaired), each a
LoRA adapter on the quickstart's targets at the registry's rate, from the SFT model (part one's LoRA run, merged:
model.base is its merged/), with the same steps and seed. Reward accuracy and margins are trl's logs (the last
training log; the held-out evaluation at the end). Win rate against the SFT model: `ftc eval` answers every held-out
prompt greedily with the tuned model and its base (the SFT model); an answer prefers chosen when its ROUGE-L F
against the chosen answer beats its ROUGE-L F against the rejected one. Win: the tuned answer prefers chosen and the
SFT answer does not; loss: the reverse; otherwise a tie.

Results are cached in WORK/results/<kind>.json (a re-run skips the phases done with the same settings and data); the
table is printed and written to WORK/methods.md (part two: WORK/preference.md).

    .venv/bin/python bench/methods.py [--work DIR] [--only lora,ia3] [--steps 20] [--skip-serve] [--preference]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ftc.compiler.build.lock import LOCK_NAME, read_lock
from ftc.compiler.methods import METHODS
from ftc.runtime import runfolder
from ftc.runtime.evaluate.metrics import Example, rouge_l

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "specs" / "quickstart.toml"
DATA = REPO / "specs" / "data"
SFT_METHODS = ("full", "lora", "qlora", "ia3", "adalora", "vera", "prompt_tuning", "p_tuning", "prefix_tuning")
PREFERENCE_METHODS = ("dpo", "orpo", "kto")
LORA_FAMILY = ("lora", "qlora")  # take the quickstart's whole table; AdaLoRA its target_modules only
MAX_NEW_TOKENS = 96  # the answers are about 40 tokens of JSON
READY = "Ctrl-C stops the server"  # what `ftc serve` prints once it serves
PHASES = ("compile", "run", "eval", "merge", "serve")
FINISHED = ("ok", "verified", "not needed", "passed", "failed", "refused")  # a phase's outcome (not an error): kept
ENV = dict(os.environ, COLUMNS="400", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")


# ---- the specs ----------------------------------------------------------------------------------------------


def method_table(kind: str, quickstart: dict[str, Any]) -> dict[str, Any]:
    """The [method] table of `kind`: its defaults, on the quickstart's LoRA targets where the kind has targets."""
    lora = quickstart["method"]
    if kind in LORA_FAMILY:
        return {**lora, "kind": kind}
    if kind == "adalora":
        return {"kind": kind, "target_modules": lora["target_modules"]}
    if kind in PREFERENCE_METHODS:
        return {"kind": kind, "adapter": "lora", **{k: v for k, v in lora.items() if k != "kind"}}
    return {"kind": kind}


def learning_rate(table: dict[str, Any]) -> float | None:
    """The registry's recommended rate for this table; None when the kind is not registered."""
    method = METHODS.get(table["kind"])
    return None if method is None else method.learning_rate(method.spec.model_validate(table))


def spec_text(name: str, base: str, data: dict[str, Any], table: dict[str, Any], lr: float | None, settings: dict[str, Any],
              compare_base: bool) -> str:
    """A spec: the quickstart's data settings, this method table, the shared training settings."""
    lines = [f"# bench/methods.py: {table['kind']} on the quickstart's task", "", "[project]", f"name = {json.dumps(name)}",
             f"seed = {settings['seed']}", "", "[model]", f"base = {json.dumps(base)}", "", "[data]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in data.items()]
    lines += ["", "[method]", *(f"{k} = {json.dumps(v)}" for k, v in table.items()), "", "[training]"]
    steps = settings["steps"]
    lines += [f"max_steps = {steps}", *([f"learning_rate = {lr!r}"] * (lr is not None)), f"batch_size = {settings['batch_size']}",
              f"micro_batch_size = {settings['micro_batch_size']}", 'scheduler = "cosine"', "warmup_ratio = 0.05",
              f"logging_steps = {max(1, steps // 4)}", f"save_steps = {steps}", "report_to = []", "",
              "[hardware]", 'accelerator = "auto"', "", "[evaluation]",
              'metrics = ["json_valid", "rouge_l", "accuracy"]', f"compare_base = {json.dumps(compare_base)}",
              f"max_new_tokens = {MAX_NEW_TOKENS}", ""]
    return "\n".join(lines)


def spec_for(kind: str, quickstart: dict[str, Any], settings: dict[str, Any], base: str | None = None) -> tuple[str, dict[str, Any], float | None]:
    """(spec text, method table, learning rate) of `kind`: on the quickstart's data and model, or with `base`, on the
    preference data (KTO's unpaired) from that model. Only the LoRA run also evaluates its base (the untrained row)."""
    table = method_table(kind, quickstart)
    lr = learning_rate(table)
    if base is None:
        data = {k: v for k, v in quickstart["data"].items() if k in ("train", "validation", "format", "max_length", "train_on", "packing", "label_field")}
        return spec_text(f"methods-{kind}", quickstart["model"]["base"], data, table, lr, settings, compare_base=kind == "lora"), table, lr
    folder, fmt = ("ticket_triage_kto", "unpaired") if kind == "kto" else ("ticket_triage_prefs", "preference")
    data = {"train": f"data/{folder}/train.jsonl", "validation": f"data/{folder}/val.jsonl", "format": fmt, "max_length": 320}
    pairs = {**settings, "micro_batch_size": max(2, settings["micro_batch_size"] // 2)}  # two sequences per example
    return spec_text(f"methods-{kind}", base, data, table, lr, pairs, compare_base=True), table, lr


# ---- ftc, as a user runs it ---------------------------------------------------------------------------------


def ftc(project: Path, log: Path, *args: str, timeout: float = 7200) -> tuple[int, str, float]:
    """Run one ftc verb in the project; (exit status, its output, seconds)."""
    began = time.monotonic()
    with log.open("w", encoding="utf-8") as fh:
        try:
            code = subprocess.run([sys.executable, "-m", "ftc.cli", *args], cwd=project, env=ENV, stdout=fh,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            code = 124
    return code, log.read_text(encoding="utf-8", errors="replace"), time.monotonic() - began


def said(output: str, verb: str) -> str:
    """What ftc said about a failure, on one line: its `ftc VERB:` lines and diagnostics, else the end of its output."""
    lines = [line.strip() for line in output.splitlines()
             if line.startswith(f"ftc {verb}:") or re.match(r"\S+:\d+:\d+: ", line) or line.strip().startswith("= hint:")]
    return " ".join(lines)[-1500:] or " ".join(output.split())[-1500:]


def serve_until_ready(project: Path, log: Path, run_dir: Path, parity: int, timeout: float) -> tuple[int | None, str, float]:
    """`ftc serve RUN` with the parity gate; once it serves (or it exits), Ctrl-C. (its exit status, output, seconds
    until ready or exit)."""
    began, lines = time.monotonic(), []
    with socket.socket() as sock:  # a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ftc.cli", "serve", str(run_dir), "--port", str(port),
                             "--parity", str(parity)], cwd=project, env=ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)

    def read() -> None:
        with log.open("w", encoding="utf-8") as fh:
            for line in proc.stdout:
                lines.append(line)
                fh.write(line)
                fh.flush()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None and not any(READY in line for line in lines) and time.monotonic() - began < timeout:
        time.sleep(0.5)
    ready = time.monotonic() - began
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: ftc stops vLLM's process group itself
        try:
            proc.wait(180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(10)
    return proc.returncode, "".join(lines), ready


# ---- reading what ftc wrote ---------------------------------------------------------------------------------


def lock_facts(lock_path: Path) -> dict[str, Any]:
    lock = read_lock(lock_path)
    m = lock.method
    skip = {"kind", "adapter", "trainable_params", "total_params"}
    settings = {k: v for k, v in m.model_dump().items() if k not in skip and v not in (None, [], {})}
    return {
        "learning_rate": lock.training.learning_rate, "trainable_params": m.trainable_params,
        "total_params": m.total_params, "adapter": m.adapter, "settings": settings,
        "merge_refusal": getattr(m, "merge_refusal", None), "serve_as": getattr(m, "serve_as", "weights"),
        "serve_refusal": getattr(m, "serve_refusal", None),
    }


def real_tokens_per_second(events: list[dict[str, Any]]) -> float | None:
    """Non-padding tokens per second over the optimizer steps after the first (the warm-up), from events.jsonl."""
    steps = [e for e in events if e.get("event") == "step" and e.get("tokens") is not None]
    if len(steps) < 2 or steps[-1]["time"] <= steps[0]["time"]:
        return None
    return (steps[-1]["tokens"] - steps[0]["tokens"]) / (steps[-1]["time"] - steps[0]["time"])


def run_facts(run_dir: Path) -> dict[str, Any]:
    record, events = runfolder.read_record(run_dir), runfolder.read_events(run_dir)
    logs = [e for e in events if e.get("event") == "log"]
    rewards = {}
    for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"):
        train = [e[key] for e in logs if key in e]
        held_out = [e[f"eval_{key}"] for e in logs if f"eval_{key}" in e]
        rewards[key] = {"train": train[-1] if train else None, "held_out": held_out[-1] if held_out else None}
    return {
        "run_status": record.status, "steps": record.step, "train_loss": record.train_loss, "eval_loss": record.eval_loss,
        "tokens_per_second": real_tokens_per_second(events), "trainer_tokens_per_second": record.tokens_per_second,
        "peak_memory_gib": record.peak_memory_gib, "peak_memory_kind": record.peak_memory_kind, "rewards": rewards,
    }


def eval_facts(run_dir: Path) -> dict[str, Any]:
    ev = runfolder.read_evaluation(run_dir, runfolder.EVAL)
    facts: dict[str, Any] = {"examples": ev.examples}
    for name in ("json_valid", "accuracy", "rouge_l"):
        row = ev.metrics.get(name, {})
        facts[name], facts[f"base_{name}"] = row.get("tuned"), row.get("base")
    facts["answers"] = [a.to_json() for a in ev.answers]
    return facts


def prefers_chosen(answer: str, chosen: str, rejected: str) -> bool:
    return rouge_l([answer], [Example(chosen)]).value > rouge_l([answer], [Example(rejected)]).value


def win_rate(answers: list[dict[str, Any]], pairs: dict[str, tuple[str, str]]) -> dict[str, int]:
    """Wins, ties and losses of the tuned answers against the base's (the SFT model's), as the docstring defines."""
    tally = {"wins": 0, "ties": 0, "losses": 0, "unmatched": 0}
    for a in answers:
        pair = pairs.get(a.get("prompt"))
        if pair is None or a.get("base") is None or a.get("tuned") is None:
            tally["unmatched"] += 1
            continue
        tuned, sft = prefers_chosen(a["tuned"], *pair), prefers_chosen(a["base"], *pair)
        tally["wins" if tuned and not sft else "losses" if sft and not tuned else "ties"] += 1
    return tally


def preference_pairs(path: Path) -> dict[str, tuple[str, str]]:
    """Each held-out prompt's last turn (as eval.json shows it) -> (chosen, rejected)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {r["prompt"][-1]["content"]: (r["chosen"][-1]["content"], r["rejected"][-1]["content"]) for r in rows}


# ---- the benchmark: one method, phase by phase, cached ------------------------------------------------------


class Bench:
    def __init__(self, work: Path, settings: dict[str, Any], eval_examples: int, parity: int) -> None:
        self.work, self.settings, self.eval_examples, self.parity = work.resolve(), settings, eval_examples, parity
        self.project, self.results, self.logs = self.work / "project", self.work / "results", self.work / "logs"
        self.quickstart = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))
        for folder in (self.project / "data", self.results, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        sources = sorted(DATA.glob("ticket_triage*/*.jsonl"))
        self.data = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
        for path in sources:  # the project's copy of the bundled data, rewritten only when it differs
            copy = self.project / path.relative_to(DATA.parent)
            copy.parent.mkdir(parents=True, exist_ok=True)
            if not copy.is_file() or copy.read_bytes() != path.read_bytes():
                shutil.copyfile(path, copy)

    def save(self, kind: str, result: dict[str, Any]) -> None:
        (self.results / f"{kind}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    def method(self, kind: str, phases: tuple[str, ...], preference_base: str | None = None) -> dict[str, Any]:
        """Run the phases of `kind` not yet done with these settings; the cached result, updated."""
        text, table, _ = spec_for(kind, self.quickstart, self.settings, preference_base)
        cached = self.results / f"{kind}.json"
        result = json.loads(cached.read_text(encoding="utf-8")) if cached.is_file() else {}
        if (result.get("spec"), result.get("data")) != (text, self.data):  # other settings or data: every phase again
            result = {"method": kind, "spec": text, "data": self.data, "table": table, "phases": {}}
        done = result["phases"]
        for phase in phases:
            previous = done.get(phase, {})
            if previous.get("status") in FINISHED and previous.get("key") == self.key(phase):
                continue
            if any(done.get(before, {}).get("status") != "ok" for before in ("compile", "run")[: PHASES.index(phase)]):
                break  # what it needs did not succeed
            print(f"{kind}: {phase} ...", flush=True)
            log = self.logs / f"{kind}-{phase}.log"
            for later in PHASES[PHASES.index(phase):] if phase in ("compile", "run") else ():
                done.pop(later, None)  # a new build or run makes every later result stale
            if phase == "compile":
                (self.project / f"{kind}.toml").write_text(text, encoding="utf-8")
            run_dir = self.project / done["run"]["run_dir"] if phase not in ("compile", "run") else None
            done[phase] = getattr(self, f"do_{phase}")(kind, run_dir, log, done)
            done[phase]["key"] = self.key(phase)
            print(f"{kind}: {phase} {done[phase]['status']} in {done[phase].get('seconds', 0):.0f}s"
                  + (f": {done[phase]['reason']}" if done[phase].get("reason") else ""), flush=True)
            self.save(kind, result)
        self.save(kind, result)
        return result

    def key(self, phase: str) -> Any:
        return {"eval": self.eval_examples, "serve": self.parity}.get(phase)

    def do_compile(self, kind: str, run_dir: None, log: Path, done: dict[str, Any]) -> dict[str, Any]:
        code, out, seconds = ftc(self.project, log, "compile", f"{kind}.toml")
        if code:
            return {"status": "error", "seconds": seconds, "reason": said(out, "compile")}
        return {"status": "ok", "seconds": seconds, **lock_facts(self.project / "build" / f"methods-{kind}" / LOCK_NAME)}

    def do_run(self, kind: str, run_dir: None, log: Path, done: dict[str, Any]) -> dict[str, Any]:
        name = f"methods-{kind}"
        before = set(runfolder.run_folders(self.project, name))
        code, out, seconds = ftc(self.project, log, "run", f"{kind}.toml", "--samples", "0")  # `ftc eval` answers more
        new = sorted(set(runfolder.run_folders(self.project, name)) - before)
        if not new:
            return {"status": "error", "seconds": seconds, "reason": said(out, "run")}
        facts = run_facts(new[-1])
        ok = code == 0 and facts["run_status"] == "completed"
        return {"status": "ok" if ok else "error", "seconds": seconds, "run_dir": str(new[-1].relative_to(self.project)),
                **facts, **({} if ok else {"reason": said(out, "run")})}

    def do_eval(self, kind: str, run_dir: Path, log: Path, done: dict[str, Any]) -> dict[str, Any]:
        code, out, seconds = ftc(self.project, log, "eval", str(run_dir.relative_to(self.project)), "--max-examples", str(self.eval_examples))
        try:
            facts = eval_facts(run_dir)
        except (runfolder.RunFolderError, AttributeError) as exc:
            return {"status": "error", "seconds": seconds, "reason": f"{said(out, 'eval')} ({exc})"}
        if kind in PREFERENCE_METHODS:
            facts["win"] = win_rate(facts["answers"], preference_pairs(self.project / "data" / "ticket_triage_prefs" / "val.jsonl"))
        return {"status": "ok" if code == 0 else "error", "seconds": seconds, **facts,
                **({} if code == 0 else {"reason": said(out, "eval")})}

    def do_merge(self, kind: str, run_dir: Path, log: Path, done: dict[str, Any]) -> dict[str, Any]:
        code, out, seconds = ftc(self.project, log, "merge", str(run_dir.relative_to(self.project)))
        check = runfolder.read_record(run_dir).merge
        if code and done["compile"].get("merge_refusal") is not None:
            return {"status": "refused", "seconds": seconds, "reason": said(out, "merge")}
        if check is None:
            return {"status": "error", "seconds": seconds, "reason": said(out, "merge")}
        return {"seconds": seconds, **check.to_json(), **({"reason": said(out, "merge")} if code else {})}

    def do_serve(self, kind: str, run_dir: Path, log: Path, done: dict[str, Any]) -> dict[str, Any]:
        serve_as = done["compile"].get("serve_as")
        if serve_as == "weights" and done.get("merge", {}).get("status") not in ("verified", "not needed"):
            return {"status": "skipped", "reason": "no verified merge to serve"}
        started = datetime.now(UTC).isoformat(timespec="seconds")  # as run.json writes "checked"
        code, out, seconds = serve_until_ready(self.project, log, run_dir.relative_to(self.project), self.parity, 1800)
        if code == 2:
            return {"status": "refused", "seconds": seconds, "reason": said(out, "serve").removeprefix("ftc serve: refused: ")}
        mode = {"weights": runfolder.MERGED, "prompt_embeds": "prompt_embeds"}.get(serve_as)
        check = runfolder.read_record(run_dir).parity.get(mode)
        if check is None or check.status not in ("passed", "failed") or (check.checked or "") < started:
            return {"status": "error", "seconds": seconds, "reason": said(out, "serve"), "exit": code}
        return {"status": check.status, "seconds": seconds, "mode": mode, "agreeing": check.agreeing,
                "prompts": check.prompts, "max_new_tokens": check.max_new_tokens}


# ---- the tables ---------------------------------------------------------------------------------------------


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def number(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def share(value: Any) -> str:
    return "—" if value is None else f"{value:.0%}"


def note(notes: list[str], text: str) -> str:
    """A footnote mark for a refusal or an error in ftc's words; the same text gets the same mark."""
    if text not in notes:
        notes.append(text)
    return f"[{notes.index(text) + 1}]"


def footnotes(notes: list[str]) -> list[str]:
    return ["\n".join(f"- [{i}] {text}" for i, text in enumerate(notes, 1))] if notes else []


def merge_cell(merge: dict[str, Any], notes: list[str]) -> str:
    status = merge.get("status")
    if status in ("verified", "failed") and merge.get("max_abs_logit_diff") is not None:
        return f"{status}: max \\|Δlogit\\| {merge['max_abs_logit_diff']:.1e}, top-1 {merge['top1_agreement']:.0%}"
    if status == "not needed":
        return "copied (full weights)"
    return "—" if status is None else f"{status} {note(notes, merge.get('reason') or status)}"


def serve_cell(serve: dict[str, Any], notes: list[str]) -> str:
    status = serve.get("status")
    if status in ("passed", "failed") and serve.get("prompts"):
        how = "prompt embeds" if serve.get("mode") == "prompt_embeds" else "merged"
        return f"{status} {serve['agreeing']}/{serve['prompts']} ({how})"
    return "—" if status is None else f"{status} {note(notes, serve.get('reason') or status)}"


def sft_table(results: list[dict[str, Any]]) -> str:
    notes, rows, seconds, used = [], [], [], []
    base = next((r["phases"].get("eval", {}) for r in results if r["phases"].get("eval", {}).get("base_json_valid") is not None), None)
    for r in results:
        p = r["phases"]
        c, run, ev = p.get("compile", {}), p.get("run", {}), p.get("eval", {})
        if c.get("status") != "ok":
            rows.append([r["method"], f"error {note(notes, c.get('reason', 'not compiled'))}"] + ["—"] * 11)
            continue
        trainable = f"{c['trainable_params']:,} ({c['trainable_params'] / c['total_params']:.2%})"
        if run.get("status") not in ("ok", None):
            rows.append([r["method"], f"{c['learning_rate']:g}", trainable, f"run failed {note(notes, run.get('reason', ''))}"] + ["—"] * 9)
            continue
        rows.append([
            r["method"], f"{c['learning_rate']:g}", trainable, number(run.get("tokens_per_second"), ",.0f"),
            number(run.get("peak_memory_gib"), ".2f"), number(run.get("train_loss"), ".3f"), number(run.get("eval_loss"), ".3f"),
            share(ev.get("json_valid")), share(ev.get("accuracy")), number(ev.get("rouge_l"), ".3f"),
            merge_cell(p.get("merge", {}), notes), serve_cell(p.get("serve", {}), notes),
            str(ev.get("examples", "—")),
        ])
        seconds.append([r["method"]] + [number(p.get(k, {}).get("seconds"), ".0f") for k in ("compile", "run", "eval", "merge", "serve")])
        used.append([r["method"], ", ".join(f"{k} {','.join(v) if isinstance(v, list) else v}" for k, v in c["settings"].items())])
    if base:
        rows.append(["(base, untrained)", "—", "0", "—", "—", "—", "—", share(base["base_json_valid"]),
                     share(base["base_accuracy"]), number(base["base_rouge_l"], ".3f"), "—", "—", str(base["examples"])])
    headers = ["method", "lr", "trainable params (share)", "real tok/s", "peak memory GiB", "train loss", "val loss",
               "json_valid", "category acc.", "ROUGE-L", "merge", "served, parity", "held-out n"]
    parts = [markdown(headers, rows), *footnotes(notes), "Seconds per phase:", markdown(["method", "compile", "run", "eval", "merge", "serve"], seconds)]
    parts += ["Method settings (each lock's resolved [method] entry):", markdown(["method", "settings"], used)]
    return "\n\n".join(parts)


def preference_table(results: list[dict[str, Any]]) -> str:
    notes, rows = [], []
    for r in results:
        p = r["phases"]
        c, run, ev = p.get("compile", {}), p.get("run", {}), p.get("eval", {})
        if c.get("status") != "ok" or run.get("status") != "ok":
            failed = c if c.get("status") != "ok" else run
            rows.append([r["method"], f"error {note(notes, failed.get('reason', 'not run'))}"] + ["—"] * 7)
            continue
        rw = run["rewards"]
        acc, margin = rw["rewards/accuracies"], rw["rewards/margins"]
        win = ev.get("win") or {}
        n = sum(win.get(k, 0) for k in ("wins", "ties", "losses"))
        rows.append([
            r["method"], f"{c['learning_rate']:g}", number(run.get("train_loss"), ".3f"),
            f"{share(acc['train'])} / {share(acc['held_out'])}", f"{number(margin['train'], '.3f')} / {number(margin['held_out'], '.3f')}",
            f"{win.get('wins', '—')} / {win.get('ties', '—')} / {win.get('losses', '—')}" + (f" ({win['wins'] / n:.0%} won)" if n else ""),
            share(ev.get("json_valid")), number(ev.get("rouge_l"), ".3f"), number(run.get("seconds"), ".0f"),
        ])
    headers = ["method", "lr", "train loss", "reward acc. train / held-out", "reward margin train / held-out",
               "vs SFT: wins / ties / losses", "json_valid", "ROUGE-L vs chosen", "run s"]
    rule = ("Win: for a held-out prompt of ticket_triage_prefs/val.jsonl, the tuned model's greedy answer is closer "
            "(ROUGE-L F) to the chosen answer than to the rejected one, and the SFT model's answer is not; a loss is the "
            "reverse; anything else a tie. KTO logs no pairwise reward accuracy (its examples are unpaired).")
    return "\n\n".join([markdown(headers, rows), *footnotes(notes), rule])


def header(settings: dict[str, Any], eval_examples: int, results: list[dict[str, Any]]) -> str:
    kinds = {r["phases"].get("run", {}).get("peak_memory_kind") for r in results} - {None}
    return (f"SmolLM2-135M-Instruct (GGUF Q4_1, dequantized), ticket triage: {settings['steps']} steps of batch "
            f"{settings['batch_size']} (micro-batch {settings['micro_batch_size']}), seed {settings['seed']}, each method "
            f"at the registry's learning rate; held-out: the first {eval_examples} of val.jsonl, greedy, "
            f"{MAX_NEW_TOKENS} new tokens at most; {os.cpu_count()} CPUs; peak memory: {', '.join(sorted(kinds)) or '—'}.")


def main() -> None:
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # started in the background (nohup, &): the ftc serve this
        signal.signal(signal.SIGINT, signal.default_int_handler)  # stops with Ctrl-C must not inherit SIGINT ignored
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ftc-bench-methods",
                        help="the project, its runs and the cached results (default: TMPDIR/ftc-bench-methods)")
    parser.add_argument("--only", help="comma-separated method kinds (default: every one of the part)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per method (default 20)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per optimizer step (default 8)")
    parser.add_argument("--micro-batch-size", type=int, default=8, help="examples per forward pass (default 8)")
    parser.add_argument("--seed", type=int, default=42, help="the projects' seed (default 42)")
    parser.add_argument("--eval-examples", type=int, default=20, help="held-out tickets `ftc eval` answers (default 20)")
    parser.add_argument("--parity", type=int, default=4, help="prompts of `ftc serve`'s parity gate (default 4)")
    parser.add_argument("--skip-serve", action="store_true", help="do not start `ftc serve`")
    parser.add_argument("--preference", action="store_true", help="part two: DPO, ORPO and KTO from the merged LoRA run")
    parser.add_argument("--preference-examples", type=int, default=40, help="held-out preference prompts (default 40, all)")
    args = parser.parse_args()
    settings = {"steps": args.steps, "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size, "seed": args.seed}
    kinds = PREFERENCE_METHODS if args.preference else SFT_METHODS
    kinds = tuple(k.strip() for k in args.only.split(",") if k.strip()) if args.only else kinds
    began, bench = time.monotonic(), Bench(args.work, settings, args.preference_examples if args.preference else args.eval_examples, args.parity)
    if args.preference:
        sft = Bench(args.work, settings, args.eval_examples, args.parity).method("lora", ("compile", "run", "merge"))
        if sft["phases"].get("merge", {}).get("status") != "verified":
            raise SystemExit("the LoRA run of part one has no verified merge to start from; see the logs in " + str(bench.logs))
        base = os.path.relpath(bench.project / sft["phases"]["run"]["run_dir"] / runfolder.MERGED, bench.project)
        results = [bench.method(k, ("compile", "run", "eval"), preference_base=base) for k in kinds]
        text = (f"Preference methods from the SFT model ({base}): {settings['steps']} steps of batch {settings['batch_size']}, "
                f"seed {settings['seed']}, LoRA adapters on the quickstart's targets, each at the registry's rate.\n\n"
                + preference_table(results))
        out = args.work / "preference.md"
    else:
        phases = ("compile", "run", "eval", "merge") + (() if args.skip_serve else ("serve",))
        results = [bench.method(k, phases) for k in kinds]
        text = header(settings, args.eval_examples, results) + "\n\n" + sft_table(results)
        out = args.work / "methods.md"
    out.write_text(text + "\n", encoding="utf-8")
    print("\n" + text + f"\n\nwrote {out} ({time.monotonic() - began:.0f}s)")


if __name__ == "__main__":
    main()
