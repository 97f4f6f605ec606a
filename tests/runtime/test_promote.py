"""Champion and challenger on two real 2-step LoRA runs of the tiny Llama in one project: `ftc eval RUN
--against CHAMPION` (both directions of the gate, the refusals), `ftc promote` (refusals, --force, history,
rollback) and `ftc serve NAME` resolving to the promoted run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny_runs import train_run

from ftc.cli.main import main
from ftc.compiler.build.lock import LOCK_NAME
from ftc.compiler.hashing import sha256_bytes
from ftc.runtime.evaluate.against import check_pair, gate
from ftc.runtime.promote import read_promoted, stack
from ftc.runtime.runfolder import AGAINST, EVAL, PROMOTED, RUN_RECORD
from ftc.runtime.serve.settings import ServeOptions, ServeRefused
from ftc.runtime.serve.target import resolve_target

EVALUATION = {"metrics": ["chrf", "rouge_l", "mean_length"], "max_new_tokens": 8, "gates": ["tuned.mean_length >= 0"]}


def _set_evaluation(run_dir: Path) -> None:
    lock = json.loads((run_dir / LOCK_NAME).read_text())
    lock["evaluation"].update(EVALUATION)
    (run_dir / LOCK_NAME).write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model) -> Path:
    """Project root with runs/tiny-lora/r1 and r2: the same spec, r2 with a constant learning rate (so their
    answers differ). r2 was trained in another folder: its run.json names that root, where its data stays."""
    root = tmp_path_factory.mktemp("promote")
    r1 = train_run(root, tiny_model, "lora")
    other = tmp_path_factory.mktemp("promote-r2")
    r2 = train_run(other, tiny_model, "lora", training='scheduler = "constant"')
    runs = r1.parent
    r1 = r1.rename(runs / "r1")
    r2 = Path(shutil.move(str(r2), runs / "r2"))
    for run in (r1, r2):
        _set_evaluation(run)
    return root


def _against(capsys, challenger: Path, champion: Path, *extra: str) -> tuple[int, dict, str]:
    code = main(["eval", str(challenger), "--against", str(champion), "--max-examples", "4", *extra])
    out = capsys.readouterr()
    return code, json.loads((challenger / AGAINST).read_text()), out.out + out.err


def test_the_gate_reads_each_metrics_direction():
    def row(champion, challenger, better="higher"):
        delta = challenger - champion
        gain = delta if better == "higher" else -delta
        return {"champion": champion, "challenger": challenger, "delta": delta, "better": better, "regressed": -gain > 0.02 + 1e-9}

    rows = {"chrf": row(0.5, 0.6), "rouge_l": row(0.5, 0.49), "repetition": row(0.1, 0.2, "lower")}
    assert gate(rows, "chrf", 0.02, 0.0) == ["repetition got worse by 0.1000 (0.1000 -> 0.2000), more than max_regression 0.02"]
    assert gate(rows, "rouge_l", 0.02, 0.0)[-1] == "the headline metric rouge_l did not improve (0.5000 -> 0.4900)"
    assert "less than min_headline_gain 0.2" in gate(rows, "chrf", 0.02, 0.2)[-1]
    rows["chrf"] = {**row(0.5, 0.6), "challenger": None, "delta": None, "note": "no answers"}
    assert gate(rows, "chrf", 0.02, 0.0)[-1] == "the headline metric chrf cannot be compared: no answers"


def test_against_promote_rollback_and_serve_by_name(project, capsys, monkeypatch):
    runs = project / "runs" / "tiny-lora"
    r1, r2 = runs / "r1", runs / "r2"
    # both directions, every metric allowed to drop: the headline (chrf) decides, and exactly one direction passes
    code2, rec2, text2 = _against(capsys, r2, r1, "--max-regression", "1", "--headline", "chrf")
    code1, rec1, _ = _against(capsys, r1, r2, "--max-regression", "1", "--headline", "chrf")
    assert not (r1 / EVAL).exists() and not (r2 / EVAL).exists()  # eval.json is not touched
    assert rec2["champion"]["run"] == "r1" and rec2["run"] == "r2" and len(rec2["champion"]["plan_hash"]) == 64
    assert rec2["examples"] == 4 and len(rec2["answers"]) == 4 and rec2["leak_check"]["status"] == "checked"
    assert rec2["leak_check"]["overlapping"] == [] and rec2["leak_check"]["champion_train_examples"] == 8
    assert rec2["held_out_data"]["challenger"] == rec2["held_out_data"]["champion"]  # the same val.jsonl content
    for name in ("chrf", "rouge_l", "mean_length"):  # the same answers, scored from either side
        assert rec2["metrics"][name]["champion"] == rec1["metrics"][name]["challenger"]
        assert rec2["metrics"][name]["challenger"] == rec1["metrics"][name]["champion"]
    assert [a["challenger"] for a in rec2["answers"]] == [a["champion"] for a in rec1["answers"]]
    assert rec2["metrics"]["mean_length"]["better"] is None and rec2["metrics"]["chrf"]["better"] == "higher"
    delta = rec2["metrics"]["chrf"]["delta"]
    assert delta != 0, "the two runs answer alike: the gate's direction cannot be tested"
    assert rec2["verdict"]["passed"] == (delta > 0) and rec1["verdict"]["passed"] == (delta < 0)
    assert (code2, code1) == ((0, 1) if delta > 0 else (1, 0))
    assert "champion" in text2 and "challenger" in text2 and "chrf" in text2
    winner, loser = (r2, r1) if delta > 0 else (r1, r2)

    # the challenger's scores are the ones `ftc eval` gives its tuned model on the same examples
    assert main(["eval", str(winner), "--max-examples", "4"]) == 0, capsys.readouterr().err
    own = json.loads((winner / EVAL).read_text())
    against = json.loads((winner / AGAINST).read_text())
    assert [a["tuned"] for a in own["answers"]] == [a["challenger"] for a in against["answers"]]
    assert own["metrics"]["chrf"]["tuned"] == against["metrics"]["chrf"]["challenger"]

    # a higher bar for the headline fails the gate, with exit 1
    code, failed, text = _against(capsys, winner, loser, "--max-regression", "1", "--headline", "chrf", "--min-gain", "1")
    assert code == 1 and failed["verdict"]["passed"] is False and "less than min_headline_gain 1" in text
    _against(capsys, winner, loser, "--max-regression", "1", "--headline", "chrf")  # passing again

    monkeypatch.chdir(project)
    # nothing promoted: serving the project's name says what to do
    with pytest.raises(ServeRefused, match=r"none is promoted; promote one with `ftc promote RUN`"):
        resolve_target(ServeOptions(target=Path("tiny-lora")), project, project, lambda _: None)
    with pytest.raises(ServeRefused, match="not found: no-such-project"):
        resolve_target(ServeOptions(target=Path("no-such-project")), project, project, lambda _: None)

    # promotion needs a verified merge and passing eval gates
    assert main(["promote", str(loser)]) == 1
    assert f"run `ftc merge {loser}`" in capsys.readouterr().err
    for run in (r1, r2):
        assert main(["merge", str(run)]) == 0, capsys.readouterr().err
    assert main(["promote", str(loser)]) == 1
    assert f"it has no eval.json; run `ftc eval {loser}`" in capsys.readouterr().err
    assert main(["eval", str(loser), "--max-examples", "4"]) == 0, capsys.readouterr().err
    assert main(["promote", str(loser), "--reason", "first model"]) == 0, capsys.readouterr().err
    record = read_promoted(runs)
    assert record.current == loser.name and record.history[0].reason == "first model" and not record.history[0].forced
    assert record.history[0].evidence["merge"] in ("verified", "not needed") and record.history[0].user
    assert main(["promote", str(loser)]) == 1 and "already the promoted run" in capsys.readouterr().err

    # the winner has a passing against.json against the promoted run: promoted
    assert main(["promote", str(winner)]) == 0, capsys.readouterr().err
    record = read_promoted(runs)
    assert record.current == winner.name and record.history[-1].previous == loser.name
    assert record.history[-1].evidence["against"]["passed"] is True
    assert record.history[-1].evidence["against"]["champion"] == loser.name

    # the loser's against.json compares it with the winner and failed: refused, unless forced
    _against(capsys, loser, winner, "--max-regression", "1", "--headline", "chrf")
    assert main(["promote", str(loser)]) == 1
    assert f"failed the regression gate against {winner.name}" in capsys.readouterr().err
    (loser / AGAINST).unlink()
    assert main(["promote", str(loser)]) == 1
    assert f"run `ftc eval {loser} --against {winner}`" in capsys.readouterr().err
    assert main(["promote", str(loser), "--force", "--reason", "hotfix"]) == 0
    assert "forced past" in capsys.readouterr().err
    forced = read_promoted(runs).history[-1]
    assert forced.forced and forced.reason == "hotfix" and "has no against.json" in forced.evidence["overridden"][0]
    assert stack(read_promoted(runs)) == [loser.name, winner.name, loser.name]

    # serve NAME resolves to the promoted run's merged/
    served = resolve_target(ServeOptions(target=Path("tiny-lora")), project, project, lambda _: None)
    assert served.run_dir == runs / loser.name and served.mode == "merged"

    # `ftc runs` marks the promoted run
    assert main(["runs", "tiny-lora", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    rows = listed if isinstance(listed, list) else listed["runs"]
    assert {row["run_id"]: row["promoted"] for row in rows} == {loser.name: True, winner.name: False}

    # rollback pops the stack, as its own history entry
    assert main(["promote", "tiny-lora", "--rollback", "--reason", "bad answers"]) == 0, capsys.readouterr().err
    record = read_promoted(runs)
    assert record.current == winner.name and record.history[-1].action == "rollback"
    assert record.history[-1].previous == loser.name and record.history[-1].reason == "bad answers"
    assert resolve_target(ServeOptions(target=Path("tiny-lora")), project, project, lambda _: None).run_dir == runs / winner.name
    assert main(["promote", "tiny-lora", "--rollback"]) == 0
    assert read_promoted(runs).current == loser.name
    assert main(["promote", "tiny-lora", "--rollback"]) == 1
    assert "no earlier promoted run" in capsys.readouterr().err
    assert len(read_promoted(runs).history) == 5 and (runs / PROMOTED).is_file()

    assert main(["promote", "tiny-lora", "--show"]) == 0
    shown = capsys.readouterr().out
    assert f"tiny-lora: promoted run {loser.name}" in shown and "rollback" in shown and "[forced]" in shown


def test_refusals_before_any_model_loads(project, capsys, tmp_path):
    runs = project / "runs" / "tiny-lora"
    r1, r2 = runs / "r1", runs / "r2"
    assert main(["eval", str(r1), "--against", str(r1)]) == 2
    assert "is the run itself" in capsys.readouterr().err
    assert main(["eval", str(r1), "--max-regression", "0.1"]) == 2  # goes with --against
    assert main(["eval", str(r1), "--against", str(r2), "--max-regression", "2"]) == 2
    assert main(["eval", str(r1), "--against", str(r2), "--headline", "mean_length"]) == 2
    assert "is not a measured metric with a better direction" in capsys.readouterr().err

    def copy(name: str, **record) -> Path:
        folder = runs / name
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(r1, folder, ignore=shutil.ignore_patterns("merged*", AGAINST, EVAL))
        data = json.loads((folder / RUN_RECORD).read_text())
        (folder / RUN_RECORD).write_text(json.dumps({**data, **record}))
        return folder

    running = copy("running", status="running")
    assert main(["eval", str(r2), "--against", str(running)]) == 1
    assert "is not a completed run (status running)" in capsys.readouterr().err
    assert main(["promote", str(running), "--force"]) == 0  # forced: recorded with what it overrode
    capsys.readouterr()
    entry = read_promoted(runs).history[-1]
    assert entry.forced and any("did not complete" in p for p in entry.evidence["overridden"])

    other = copy("other-template")
    lock = json.loads((other / LOCK_NAME).read_text())
    lock["inputs"]["chat_template"]["sha256"] = "0" * 64
    (other / LOCK_NAME).write_text(json.dumps(lock))
    assert main(["eval", str(r2), "--against", str(other)]) == 1
    assert "different chat templates" in capsys.readouterr().err

    # other held-out data: a warning that says what differs; the challenger's set is scored
    other_data = copy("other-data")
    lock = json.loads((other_data / LOCK_NAME).read_text())
    lock["inputs"]["data"]["validation"]["sha256"] = "1" * 64
    (other_data / LOCK_NAME).write_text(json.dumps(lock))
    (warning,) = check_pair(r2, other_data)
    assert warning.startswith("the runs hold out different data (sha256 differ") and "this run's held-out" in warning

    # a champion whose training data (as its lock names it) holds one of the challenger's held-out examples
    leaky = copy("leaky")
    root = json.loads((r1 / RUN_RECORD).read_text())["root"]
    data = Path(root) / "data"
    text = (data / "train.jsonl").read_text() + (data / "val.jsonl").read_text().splitlines(keepends=True)[2]
    (data / "leaky.jsonl").write_text(text)
    lock = json.loads((leaky / LOCK_NAME).read_text())
    lock["inputs"]["data"]["train"].update(path="data/leaky.jsonl", sha256=sha256_bytes(text.encode()), bytes=len(text.encode()))
    (leaky / LOCK_NAME).write_text(json.dumps(lock))
    assert main(["eval", str(r2), "--against", str(leaky), "--max-examples", "4"]) == 1
    err = capsys.readouterr().err
    assert "trained on 1 of this run's 4 held-out examples (data/val.jsonl:3)" in err and "refused" in err
    for name in ("running", "other-template", "other-data", "leaky"):
        shutil.rmtree(runs / name)
