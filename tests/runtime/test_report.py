"""`ftc report` on a real run of the tiny Llama (made by `ftc run`, with its samples), rendered in headless
Chromium: the page must show the run's numbers and the evaluation's, its plots must decode, and text from the
data or the models must never become markup.

Chromium is Debian's package; `make test` installs it. The page itself has no script: to read what the browser
shows, the test renders a copy with a probe script appended, which writes the page's visible text
(innerText) and each image's decoded size into the DOM that --dump-dom prints."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import trained_run

from ftc.cli.main import main
from ftc.compiler.plan.model import Lock
from ftc.runtime.report.gather import loss_points, token_lengths
from ftc.runtime.runfolder import read_record, run_lock

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PROBE = """<script>
addEventListener("load", () => {
  const probe = document.createElement("pre");
  probe.id = "ftc-probe";
  probe.textContent = JSON.stringify({
    text: document.body.innerText,
    images: [...document.images].map(i => ({alt: i.alt, width: i.naturalWidth, height: i.naturalHeight, complete: i.complete})),
    scripts: document.scripts.length,
    injected: document.querySelectorAll(".injected").length,
  });
  document.body.appendChild(probe);
});
</script>"""
HOSTILE = '<img src=x onerror="alert(1)"><b class="injected">bold</b> & </pre>'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model) -> Path:
    """A run made by `ftc run` (run.json, events.jsonl, samples.json as users get them), of the tiny project."""
    project = trained_run(tmp_path_factory, tiny_model, "lora").parents[2]
    before = set((project / "runs" / "tiny-lora").iterdir())
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # two test workers share two cores
    result = subprocess.run(
        [sys.executable, "-m", "ftc.cli", "run", "build/tiny-lora", "--samples", "2"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (made,) = set((project / "runs" / "tiny-lora").iterdir()) - before
    return made


def render(page: Path, workdir: Path) -> dict:
    """What headless Chromium shows of the page: its visible text, its images' decoded sizes, its scripts."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("chromium is not installed: run `make test` (which installs it), or `apt-get install chromium`")
    probed = workdir / f"probed-{page.name}"
    text = page.read_text(encoding="utf-8")
    assert text.count("</body>") == 1
    probed.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={workdir / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(r'<pre id="ftc-probe">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, f"the probe did not run; chromium printed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def check_self_contained(text: str) -> None:
    assert "<script" not in text and "<link" not in text and "@import" not in text
    # nothing fetched: no URL in an attribute or in CSS (an endpoint's URL may appear as text)
    assert not re.search(r'(?:href|src|action)="https?://|url\(', text)
    sources = re.findall(r'\bsrc="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)


def report(run: Path, *more: str) -> Path:
    assert main(["report", str(run), *more]) == 0
    return Path(more[more.index("--output") + 1]) if "--output" in more else run / "report.html"


def test_report_of_a_run_before_evaluation(run_dir, tmp_path, capsys):
    page = report(run_dir)
    assert f"wrote {os.path.relpath(page)}" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    check_self_contained(text)
    again = report(run_dir, "--output", str(tmp_path / "again.html"))
    assert again.read_bytes() == page.read_bytes(), "the same run must give the same page"

    shown = render(page, tmp_path)
    record = read_record(run_dir)
    seen = shown["text"]
    for expected in (
        f"run {run_dir.name}",
        f"sha256:{record.plan_sha256}",
        f"{record.train_loss:.4f}",
        f"{record.eval_loss:.4f}",
        f"{record.tokens_per_second:,.0f}",
        f"{record.peak_memory_gib:.2f} GiB",
        "2 of 2",
        f"no evaluation yet: run ftc eval runs/tiny-lora/{run_dir.name}",
        "train 8 examples (1,318 tokens",
    ):
        assert expected in seen, expected
    # the token lengths, measured as `ftc data check` measures them, under each histogram
    assert "data/train.jsonl (train): 8 examples, 1,318 tokens" in seen
    assert "data/val.jsonl (validation): 4 examples, 640 tokens" in seen
    # samples.json's answers, side by side
    samples = json.loads((run_dir / "samples.json").read_text(encoding="utf-8"))["samples"]
    assert len(samples) == 2 and "the first 2 of 2 held-out examples in samples.json" in seen
    assert samples[0]["reference"] in seen and "example 2 data/val.jsonl:2" in seen

    assert [i["alt"] for i in shown["images"]] == ["training and validation loss by step", "train: tokens per example", "validation: tokens per example"]
    assert all(i["complete"] and i["width"] == 800 and i["height"] == 360 for i in shown["images"]), shown["images"]
    assert shown["scripts"] == 1  # the probe's


def write_evaluation(run: Path, plan: str) -> dict:
    answer = {"prompt": "ticket: my <b>order</b> is late", "reference": '{"category": "shipping"}'}
    evaluation = {
        "format_version": 1,
        "run": run.name,
        "plan_hash": plan,
        "examples": 4,
        "held_out": {"source": "validation", "path": "data/val.jsonl"},
        "models": {"base": "the base weights the run trained against", "tuned": "the base with final/'s adapter merged in memory"},
        "decoding": {"do_sample": False, "max_new_tokens": 64, "stop_token_ids": [2, 7], "chat_template_sha256": "ab" * 32},
        "metrics": {
            "exact_match": {"base": 0.0, "tuned": 0.25, "note": None},
            "json_valid": {"base": 0.5, "tuned": 1.0, "note": None, "reference": 1.0},
            "field_accuracy.priority": {"base": None, "tuned": 0.8125, "note": "the base never answered in JSON"},
        },
        "versions": {"ftc": "0.1.0"},
        "lm_eval": {
            "arc_easy": {"status": "ok", "kind": "general", "metric": "acc,none", "examples": 16, "base": {"acc,none": 0.25, "alias": "arc_easy"},
                         "tuned": {"acc,none": 0.3125, "alias": "arc_easy"}, "reason": None},
            "hellaswag": {"status": "unavailable", "base": None, "tuned": None, "reason": "its dataset is not in the local cache"},
        },
        "gates": [
            {"gate": "tuned.json_valid >= 0.9", "holds": True, "left": 1.0, "right": 0.9},
            {"gate": "tuned.exact_match >= base.exact_match + 0.2", "holds": True, "left": 0.25, "right": 0.2},
            {"gate": "tuned.exact_match >= 0.6", "holds": False, "left": 0.25, "right": 0.6},
            {"gate": "tuned.rouge_l >= 0.5", "holds": False, "left": None, "right": None, "error": "cannot be checked: rouge_l was not measured"},
        ],
        "not_checked": [{"finding": "answers cut at max_new_tokens", "reason": "no answer reached the budget"}],
        "diagnosis": [
            {"finding": "the tuned model copies the category of the first training example", "evidence": "3 of 4 answers say <shipping>", "remedy": "train longer"},
        ],
        "answers": [
            {**answer, "base": None if i == 2 else f"base answer {i}", "tuned": HOSTILE if i == 1 else f"tuned answer {i}"} for i in range(1, 7)
        ],
    }
    (run / "eval.json").write_text(json.dumps(evaluation), encoding="utf-8")
    return evaluation


def test_report_with_an_evaluation(run_dir, tmp_path):
    # a copy of the run's records, next to it (the report reads no weights), so that the first test's run stays unevaluated
    run = run_dir.parent / f"{run_dir.name}-evaluated"
    run.mkdir()
    for name in ("run.json", "ftc.lock.json", "events.jsonl", "samples.json"):
        shutil.copy2(run_dir / name, run / name)
    evaluation = write_evaluation(run, read_record(run).plan_sha256)
    write_serving(run, evaluation)
    page = report(run, "--output", str(tmp_path / "out" / "page.html"))
    assert not (run / "report.html").exists()
    check_self_contained(page.read_text(encoding="utf-8"))

    shown = render(page, tmp_path)
    seen = shown["text"]
    assert "no evaluation yet" not in seen
    assert "4 held-out examples from data/val.jsonl (validation); greedy decoding, at most 64 new tokens" in seen
    assert "base: the base weights the run trained against; tuned: the base with final/'s adapter merged in memory" in seen
    # the metrics table: metric, base, tuned, tuned - base, note (cells are tab-separated in innerText)
    assert "exact_match\t0.0000\t0.2500\t+0.2500\t–\t" in seen
    assert "json_valid\t0.5000\t1.0000\t+0.5000\t1.0000\t" in seen  # the reference answers' own score too
    assert "field_accuracy.priority\t–\t0.8125\t–\t–\tthe base never answered in JSON" in seen
    assert "Gates: 2 of 4 hold" in seen
    assert "tuned.rouge_l >= 0.5\t–\t–\tfail: cannot be checked: rouge_l was not measured" in seen
    assert "tuned.json_valid >= 0.9\t1.0000\t0.9000\tpass" in seen
    assert "tuned.exact_match >= 0.6\t0.2500\t0.6000\tfail" in seen
    assert "the tuned model copies the category of the first training example\t3 of 4 answers say <shipping>\ttrain longer" in seen
    assert "arc_easy\tacc,none\t0.2500\t0.3125\t+0.0625\t16 examples" in seen
    assert re.search(r"not checked:\s+answers cut at max_new_tokens: no answer reached the budget", seen)
    assert "hellaswag: unavailable: its dataset is not in the local cache" in seen
    # eval.json's answers replace samples.json's; five are shown; what the model wrote is text, never markup
    assert "the first 5 of 6 held-out examples in eval.json" in seen
    assert "tuned answer 5" in seen and "tuned answer 6" not in seen and "(not generated)" in seen
    assert HOSTILE in seen and "ticket: my <b>order</b> is late" in seen
    assert shown["injected"] == 0 and len(shown["images"]) == 3 and shown["scripts"] == 1
    assert all(i["width"] > 0 for i in shown["images"])
    # serving: both parity checks (one per mode), and the scores through the endpoint next to the local ones
    assert "adapter\tfailed\t1/2 (50%)\tvLLM bfloat16 / transformers float32\tfirst divergence: data/val.jsonl:2: answer token 26" in seen
    assert "merged\tpassed\t4/4 (100%)\tvLLM float32 / transformers float32\tfirst divergence: none" in seen
    assert "served by http://127.0.0.1:8000 as 'tiny-lora'; prompt token ids equal to ftc's rendering: 4/4; 3/4 served answers equal to eval.json's local ones" in seen
    assert "exact_match\t0.2500\t0.0000\t-0.2500" in seen


def write_serving(run: Path, evaluation: dict) -> None:
    """run.json's parity checks as `ftc serve` records them, and an eval-endpoint.json as `ftc eval --endpoint` writes it."""
    from ftc.runtime.runfolder import update_record

    def check(mode, status, agreeing, prompts, dtype, first):
        return {"status": status, "mode": mode, "prompts": prompts, "agreeing": agreeing, "agreement": agreeing / prompts,
                "required": 1.0, "served_dtype": dtype, "reference_dtype": "float32", "endpoint": "/v1/chat/completions",
                "max_new_tokens": 64, "checked": "2026-11-29T05:00:00+00:00", "first_divergence": first}

    first = {"source": "data/val.jsonl:2", "prompt": "p", "in": "answer", "position": 26}
    update_record(run, serve={"parity": {"merged": check("merged", "passed", 4, 4, "float32", None),
                                         "adapter": check("adapter", "failed", 1, 2, "bfloat16", first)}})
    served = {
        **evaluation,
        "models": {"base": evaluation["models"]["base"], "tuned": "served by http://127.0.0.1:8000 as 'tiny-lora'"},
        "metrics": {name: {**row, "tuned": 0.0 if name == "exact_match" else row["tuned"]} for name, row in evaluation["metrics"].items()},
        "endpoint": {"url": "http://127.0.0.1:8000", "model": "tiny-lora", "prompt_ids_match": "4/4", "first_prompt_mismatch": None,
                     "answers_equal_to_local": {"status": "compared", "equal": 3, "compared": 4, "first_difference": None}},
    }
    (run / "eval-endpoint.json").write_text(json.dumps(served), encoding="utf-8")


def test_an_evaluation_of_another_plan_is_named(run_dir, tmp_path):
    from ftc.runtime.report.gather import gather_report
    from ftc.runtime.report.page import render_html
    from ftc.runtime.runfolder import update_record

    run = tmp_path / "runs" / "tiny-lora" / "other"
    run.mkdir(parents=True)
    for name in ("run.json", "ftc.lock.json", "events.jsonl"):
        shutil.copy2(run_dir / name, run / name)
    write_evaluation(run, "0" * 64)
    (run / "samples.json").write_text("{not json", encoding="utf-8")
    merge = {"status": "verified", "examples": 3, "positions": 120, "max_abs_logit_diff": 2.5e-06, "mean_abs_logit_diff": 3.1e-07,
             "top1_agreement": 1.0, "tolerance": {}, "dtype": "float32", "path": "merged"}  # as `ftc merge` records it
    update_record(run, merge=merge)
    report_ = gather_report(run)
    assert report_.evaluation is not None
    assert any("eval.json was made for plan sha256:000000000000" in note for note in report_.notes)
    page = render_html(report_)
    assert "verified: max |Δlogit| 2.5e-06, mean 3.1e-07, top-1 agreement 100.0% over 120 positions of 3 examples (float32), in merged/" in page
    assert "eval.json was made for plan sha256:000000000000, and this run&#x27;s plan is sha256:" in page
    (run / "eval.json").write_text("[]", encoding="utf-8")
    report_ = gather_report(run)
    assert report_.evaluation is None and report_.answers == () and any("samples.json is unreadable" in n for n in report_.notes)


def test_token_lengths_are_not_drawn_from_data_that_changed(run_dir):
    record, lock = read_record(run_dir), run_lock(run_dir)
    root = Path(record.root)
    lengths, note = token_lengths(run_dir, root, lock)
    assert [s.name for s in lengths] == ["train", "validation"] and note is None
    assert sorted(lengths[0].lengths) == list(lengths[0].lengths) and sum(lengths[0].lengths) == lock.data.splits["train"].tokens

    edited = lock.to_json()
    edited["inputs"]["data"]["train"]["sha256"] = "0" * 64  # as if data/train.jsonl had been edited since the run
    lengths, note = token_lengths(run_dir, root, Lock.model_validate(edited))
    assert lengths == () and "data/train.jsonl changed since this run" in note
    edited["inputs"]["spec"]["path"] = "gone.toml"
    assert "gone.toml is gone" in token_lengths(run_dir, root, Lock.model_validate(edited))[1]


def test_loss_points_keep_what_the_surviving_sessions_logged():
    events = [
        {"event": "start", "resume_from": None},
        {"event": "train_begin", "step": 0},
        {"event": "log", "step": 5, "loss": 2.0},
        {"event": "log", "step": 5, "eval_loss": 2.5},
        {"event": "log", "step": 10, "loss": 1.5},
        {"event": "log", "step": 10, "eval_loss": 2.25},
        {"event": "log", "step": 15, "loss": 1.25},  # logged, then the run crashed; resumed from checkpoint-10
        {"event": "start", "resume_from": "checkpoint-10"},
        {"event": "train_begin", "step": 10},
        {"event": "log", "step": 15, "loss": 1.0},
        {"event": "log", "step": 15, "eval_loss": 1.75},
        {"event": "log", "step": 15, "train_loss": 1.4, "train_runtime": 3.0},  # the Trainer's summary, not a point
        {"event": "end", "status": "completed", "step": 15},
    ]
    train, validation = loss_points(events)
    assert train == [(5, 2.0), (10, 1.5), (15, 1.0)]
    assert validation == [(5, 2.5), (10, 2.25), (15, 1.75)]


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a run folder (it has no run.json)" in capsys.readouterr().err
