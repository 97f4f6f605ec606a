"""The loop after the first model, on the real quickstart (specs/quickstart.toml, SmolLM2-135M), as a user runs it:

  1. `ftc promote` the champion (--champion: a completed, evaluated quickstart run; merged first if it is not)
  2. `ftc serve quickstart --log` serves it; the openai client sends bench/loop_tickets.jsonl: 24 new tickets and
     2 of the held-out ones
  3. an expert's feedback from the tickets' reference answers (right category, priority and sentiment: "good";
     otherwise "bad", corrected); `ftc data from-logs` writes the next data version and refuses the held-out two
  4. the challenger: a short retrain of the champion's merged model on that version (WORK/quickstart-v2.toml);
     `ftc eval`, `ftc merge`, `ftc eval CHALLENGER --against CHAMPION`, and `ftc promote CHALLENGER` (refused,
     and recorded, when the comparison failed)
  5. `ftc serve --ab CHAMPION=0.5,CHALLENGER=0.5 --log` answers the 24 new tickets again, one user each;
     feedback per arm; `ftc report --ab`
  6. `ftc promote quickstart --rollback` (when step 4 promoted), `ftc runs quickstart`, `ftc diff`

Every step is the `ftc` command line in a subprocess. WORK (default runs/loop-quickstart/) is made afresh; the
challenger's run lands in runs/quickstart/ beside the champion; build/quickstart/, which specs/quickstart.toml owns,
is moved aside while the v2 spec compiles and trains, and put back. About 40 minutes on a 2-core CPU, most of it
the evaluations and vLLM starting three times.

    .venv/bin/python bench/loop_quickstart.py [--champion runs/quickstart/RUN] [--work runs/loop-quickstart]

Writes WORK/result.json (every command with its exit status, seconds and the tail of its output; the counts; the
comparison; the A/B split) and WORK/ab-report.html, and prints a summary. Exits 1 when a step fails unexpectedly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from openai import OpenAI, OpenAIError

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "quickstart.toml"
VAL = REPO / "specs" / "data" / "ticket_triage" / "val.jsonl"
TICKETS = Path(__file__).resolve().parent / "loop_tickets.jsonl"
NAME = "quickstart"
KEY_ENV = "FTC_LOOP_BENCH_KEY"
JUDGED = ("category", "priority", "sentiment")  # what the expert checks; the summary is free text
READY = "Ctrl-C stops the server"
TAIL = 3000  # characters of each command's output kept in result.json
COLUMNS = ("champion", "challenger", "delta", "better", "regressed")  # against.json's metric rows, as kept


class StepFailed(Exception):
    """A command exited with a status the loop did not expect."""


class Loop:
    """The commands run so far, with their exit statuses, seconds and output tails."""

    def __init__(self, work: Path, key: str) -> None:
        self.work, self.key = work, key
        self.commands: list[dict] = []
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **{KEY_ENV: key})

    def ftc(self, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        """Run `ftc ARGS` in the repository, echoing its output; raise StepFailed unless it exits with one of ok."""
        shown = shlex.join(["ftc", *args])
        print(f"\n$ {shown}", flush=True)
        began = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "ftc.cli", *args], cwd=REPO, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        code = proc.wait()
        output = "".join(lines)
        self.commands.append({"command": shown, "exit": code, "seconds": round(time.monotonic() - began, 1),
                              "output_tail": output[-TAIL:]})
        if code not in ok:
            raise StepFailed(f"`{shown}` exited with {code}")
        return subprocess.CompletedProcess(args, code, output, "")

    def serve(self, label: str, *args: str) -> Server:
        """Start `ftc serve ARGS --port P` with its output in WORK/LABEL.log; return once it says it is ready."""
        port = free_port()
        server = Server(shlex.join(["ftc", "serve", *args, "--port", str(port)]), port, self.work / f"{label}.log")
        print(f"\n$ {server.shown}", flush=True)
        with server.log.open("w", encoding="utf-8") as out:
            server.proc = subprocess.Popen([sys.executable, "-m", "ftc.cli", "serve", *args, "--port", str(port)],
                                           cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        while READY not in server.log.read_text(encoding="utf-8"):
            if server.proc.poll() is not None:
                self.record(server, server.proc.returncode)
                raise StepFailed(f"`{server.shown}` exited with {server.proc.returncode} before it was ready")
            time.sleep(1)
        print(f"ready after {time.monotonic() - server.began:.0f}s (its output: {rel(server.log)})", flush=True)
        return server

    def stop(self, server: Server) -> None:
        """Ctrl-C, as a user stops it (vLLM too, when ftc does not stop within 3 minutes); record how it ended."""
        server.proc.send_signal(signal.SIGINT)
        try:
            code = server.proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)  # its own session: ftc and the vLLM it started
            code = server.proc.wait()
        self.record(server, code, " (then Ctrl-C)")
        print(f"ftc serve stopped with exit status {code}", flush=True)
        if code != 0:
            raise StepFailed(f"`{server.shown}` exited with {code} after Ctrl-C; see {rel(server.log)}")

    def record(self, server: Server, code: int, note: str = "") -> None:
        seconds = round(time.monotonic() - server.began, 1)
        self.commands.append({"command": server.shown + note, "exit": code, "seconds": seconds,
                              "output_tail": log_tail(server.log)})


@dataclass
class Server:
    """A running `ftc serve`: its command line, port and output file."""

    shown: str
    port: int
    log: Path
    began: float = field(default_factory=time.monotonic)
    proc: subprocess.Popen | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-TAIL:]


def rel(path: Path) -> str:
    """PATH as the commands are shown: relative to the repository when it is inside."""
    path = path.resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def judged(answer: str | None) -> tuple | None:
    """The fields the expert checks, or None when the answer is not a JSON object."""
    try:
        value = json.loads(answer or "")
    except json.JSONDecodeError:
        return None
    return tuple(value.get(key) for key in JUDGED) if isinstance(value, dict) else None


def feedback(answers: dict[str, str], references: dict[str, str]) -> list[dict]:
    """What an expert with the reference answers writes: good when category, priority and sentiment are right."""
    rows = []
    for request_id, answer in answers.items():
        if judged(answer) == judged(references[request_id]):
            rows.append({"id": request_id, "verdict": "good"})
        else:
            rows.append({"id": request_id, "verdict": "bad", "correction": references[request_id]})
    return rows


def ask(port: int, key: str, tickets: list[dict], prefix: str, users: bool = False) -> dict[str, dict]:
    """Send each ticket (its messages up to the answer) with the openai client; the answers and the arms."""
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=600, max_retries=0)
    served = {}
    for k, ticket in enumerate(tickets):
        request_id = f"{prefix}{ticket['id']}"
        extra = {"user": f"user-{k:02d}"} if users else {}
        raw = client.chat.completions.with_raw_response.create(
            model=NAME, messages=ticket["messages"][:-1], temperature=0, max_tokens=96,
            extra_headers={"X-Request-Id": request_id}, **extra,
        )
        answer = raw.parse().choices[0].message.content
        served[request_id] = {"answer": answer, "arm": raw.headers.get("x-ftc-arm")}
        print(f"{request_id}: {answer}" + (f"  [{served[request_id]['arm']}]" if users else ""), flush=True)
    return served


def spec_v2(work: Path, champion: Path) -> str:
    """specs/quickstart.toml with the champion's merged model as the base and the new data version to train on."""
    text = SPEC.read_text(encoding="utf-8")

    def here(path: Path) -> str:  # spec paths are relative to the spec's folder
        return Path(os.path.relpath(path, work)).as_posix()

    changes = [
        (r'base = "pkg:[^"]*"', f'base = "{here(champion / "merged")}"   # the champion, merged'),
        (r'train = "data/ticket_triage/train.jsonl" *#.*',
         'train = "train-v2.jsonl"   # `ftc data from-logs`: the train file and the served tickets'),
        (r'validation = "data/ticket_triage/val.jsonl"', f'validation = "{here(VAL)}"'),
        (r"max_steps = 24 *#.*", "max_steps = 8                  # a short retrain: 8 x 16 = 128 tickets"),
        (r"learning_rate = 1e-3", "learning_rate = 3e-4           # not 1e-3: the base already answers in shape"),
        (r"gates = \[.*\]", ('# "base" is now the champion: `ftc eval --against` is the comparison that matters.\n'
                             'gates = ["tuned.json_valid >= 0.9"]')),
    ]
    if not re.search(r"^headline = ", text, re.MULTILINE):  # what --against requires to rise
        changes.append((r"\[evaluation\]\n", '[evaluation]\nheadline = "accuracy"  # json_valid is at its ceiling\n'))
    for pattern, replacement in changes:
        text, count = re.subn(pattern, lambda _, new=replacement: new, text)
        if count != 1:
            raise StepFailed(f"{SPEC}: expected one line matching {pattern!r}, found {count}")
    header = (f"# Written by bench/loop_quickstart.py: specs/quickstart.toml retrained from {rel(champion)} on the\n"
              "# answers `ftc serve` gave, with an expert's corrections (`ftc data from-logs`).\n")
    return header + text


@contextmanager
def build_handed_over(work: Path):
    """build/quickstart/ belongs to specs/quickstart.toml, and `ftc compile` refuses to let another spec of the same
    project name overwrite it: move it aside while the v2 spec compiles and trains, and put it back afterwards."""
    build, saved = REPO / "build" / NAME, work / "build-quickstart-saved"
    if build.exists():
        print(f"\nmoving {rel(build)}/ aside to {rel(saved)}/ while the v2 spec owns it", flush=True)
        build.rename(saved)
    try:
        yield
    finally:
        shutil.rmtree(build, ignore_errors=True)
        if saved.exists():
            saved.rename(build)
            print(f"put specs/quickstart.toml's {rel(build)}/ back", flush=True)


def newest_run(before: set[Path]) -> Path:
    made = sorted(p for p in (REPO / "runs" / NAME).iterdir() if p.is_dir() and p not in before)
    if len(made) != 1:
        raise StepFailed(f"expected one new run under runs/{NAME}/, found {[p.name for p in made]}")
    return made[0]


def promoted_now() -> str | None:
    path = REPO / "runs" / NAME / "promoted.json"
    return json.loads(path.read_text(encoding="utf-8")).get("current") if path.is_file() else None


def run_loop(loop: Loop, champion: Path, result: dict) -> None:
    work, key = loop.work, loop.key
    tickets = read_jsonl(TICKETS)
    new = [t for t in tickets if t["id"].startswith("new-")]
    references = {f"{prefix}{t['id']}": t["messages"][-1]["content"] for t in tickets for prefix in ("", "ab-")}

    # 1. the champion: merged (promotion requires it) and promoted
    if not (champion / "merged").is_dir():
        loop.ftc("merge", rel(champion))
    if promoted_now() == champion.name:
        print(f"\n{rel(champion)} is already the promoted run of {NAME}", flush=True)
    else:
        loop.ftc("promote", rel(champion), "--reason", "the first quickstart model")
    loop.ftc("promote", NAME, "--show")

    # 2. serve it by name, logging; the tickets arrive
    server = loop.serve("serve", NAME, "--log", rel(work / "logs"), "--parity", "8", "--api-key-env", KEY_ENV)
    try:
        served = ask(server.port, key, tickets, "")
    finally:
        loop.stop(server)
    result["served"] = len(served)

    # 3. the expert's verdicts; the next data version
    rated = write_jsonl(work / "feedback.jsonl", feedback({k: v["answer"] for k, v in served.items()}, references))
    verdicts = Counter(row["verdict"] for row in read_jsonl(rated))
    result["feedback"] = {"good": verdicts["good"], "bad": verdicts["bad"]}
    loop.ftc("data", "from-logs", rel(work / "logs"), "--spec", rel(SPEC), "--feedback", rel(rated),
             "--out", rel(work / "train-v2.jsonl"), "--pairs", rel(work / "pairs-v2.jsonl"), "--keep-good")
    report = json.loads((work / "train-v2.jsonl.report.json").read_text(encoding="utf-8"))
    leaks = [e["id"] for e in report["exchanges"] if e["reason"].startswith("held-out prompt")]
    result["from_logs"] = {**report["counts"], "train_records": report["train_records"],
                           "new_records": report["new_records"], "held_out_refused": leaks}
    if sorted(leaks) != sorted(t["id"] for t in tickets if t["id"].startswith("held-out")):
        raise StepFailed(f"from-logs refused {leaks} as held-out, not exactly the held-out tickets")

    # 4. the challenger
    spec = work / "quickstart-v2.toml"
    spec.write_text(spec_v2(work, champion), encoding="utf-8")
    before = set((REPO / "runs" / NAME).iterdir())
    with build_handed_over(work):
        loop.ftc("compile", rel(spec))
        loop.ftc("run", rel(spec), "--samples", "0")
    challenger = newest_run(before)
    result["challenger"] = rel(challenger)
    loop.ftc("eval", rel(challenger), "--baselines", "")
    loop.ftc("merge", rel(challenger))
    compared = loop.ftc("eval", rel(challenger), "--against", rel(champion), ok=(0, 1))
    against = json.loads((challenger / "against.json").read_text(encoding="utf-8"))
    result["against"] = {"exit": compared.returncode, "verdict": against["verdict"], "examples": against["examples"],
                         "metrics": {m: {k: row.get(k) for k in COLUMNS} for m, row in against["metrics"].items()}}
    passed = against["verdict"]["passed"]
    promote = loop.ftc("promote", rel(challenger), "--reason", "retrained on served tickets, corrected",
                       ok=(0,) if passed else (1,))
    result["challenger_promoted"] = promote.returncode == 0
    if not passed:
        result["promotion_refused"] = promote.stdout[-TAIL:]

    # 5. A/B: both behind one address, one user per ticket; the expert rates each arm's answers
    arms = f"{rel(champion)}=0.5,{rel(challenger)}=0.5"
    server = loop.serve("serve-ab", "--ab", arms, "--log", rel(work / "logs-ab"), "--parity", "8",
                              "--api-key-env", KEY_ENV)
    try:
        answered = ask(server.port, key, new, "ab-", users=True)
    finally:
        loop.stop(server)
    rows = feedback({k: v["answer"] for k, v in answered.items()}, references)
    rated_ab = write_jsonl(work / "feedback-ab.jsonl", rows)
    per_arm: dict[str, Counter] = {}
    for row in rows:
        per_arm.setdefault(answered[row["id"]]["arm"], Counter())[row["verdict"]] += 1
    result["ab"] = {"requests": len(answered), "split": dict(Counter(v["arm"] for v in answered.values())),
                    "feedback": {arm: {"good": c["good"], "bad": c["bad"]} for arm, c in sorted(per_arm.items())}}
    loop.ftc("report", "--ab", rel(work / "logs-ab"), "--feedback", rel(rated_ab),
             "--output", rel(work / "ab-report.html"))

    # 6. back to the champion; the runs and what changed
    if result["challenger_promoted"]:
        loop.ftc("promote", NAME, "--rollback")
    loop.ftc("promote", NAME, "--show")
    loop.ftc("runs", NAME)
    loop.ftc("diff", rel(champion), rel(challenger))


def summary(result: dict) -> str:
    lines = [f"champion {result['champion']}, challenger {result.get('challenger', '-')}",
             f"served {result.get('served', '-')} tickets; feedback {result.get('feedback', '-')}"]
    if "from_logs" in result:
        f = result["from_logs"]
        lines.append(f"from-logs: kept {f['kept']} ({f['corrected']} corrected, {f['kept_good']} good), "
                     f"dropped {f['dropped']} {f['dropped_by_reason']}, held-out refused {f['held_out_refused']}, "
                     f"pairs {f['pairs']}; train-v2 = {f['train_records']} + {f['new_records']} records")
    if "against" in result:
        a = result["against"]
        lines.append(f"--against ({a['examples']} held-out): passed {a['verdict']['passed']}, headline "
                     f"{a['verdict']['headline']}; failures {list(a['verdict']['failures'])}")
        lines.append("| metric | champion | challenger | delta |\n|---|---|---|---|")
        for metric, row in a["metrics"].items():
            cells = ["" if row[k] is None else f"{row[k]:.3f}" for k in ("champion", "challenger", "delta")]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append(f"challenger promoted: {result['challenger_promoted']}")
    if "ab" in result:
        lines.append(f"A/B: {result['ab']['requests']} requests, split {result['ab']['split']}, "
                     f"feedback per arm {result['ab']['feedback']}")
    lines.append(f"total {result['seconds']:.0f}s; {'ok' if result['ok'] else 'FAILED: ' + result['error']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--champion", type=Path, default=REPO / "runs" / NAME / "20261207-231011",
                        help="a completed quickstart run with eval.json (default: runs/quickstart/20261207-231011)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "loop-quickstart",
                        help="logs, feedback, data and the v2 spec; made afresh (default: runs/loop-quickstart)")
    args = parser.parse_args()
    # Started in the background (`nohup ... &`), this process and so its children would ignore SIGINT, and the
    # servers could not be stopped with Ctrl-C: take it back, so that each `ftc serve` starts with the default.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    champion, work = args.champion.resolve(), args.work.resolve()
    if not (champion / "eval.json").is_file():
        parser.error(f"{champion}: no eval.json; run `ftc eval {champion}` first")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    loop = Loop(work, secrets.token_urlsafe(16))
    result: dict = {"champion": rel(champion), "work": rel(work), "ok": True, "error": None}
    began = time.monotonic()
    try:
        run_loop(loop, champion, result)
    except (StepFailed, OpenAIError, OSError, KeyError, ValueError) as exc:
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    result["seconds"] = round(time.monotonic() - began, 1)
    result["commands"] = loop.commands
    (work / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\n{summary(result)}\nwrote {rel(work / 'result.json')}", flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
