"""`ftc api`'s pieces without a server: its settings file, a job request, the spec a job gets, and the store's
pagination. The server itself, with the openai client, is tests/runtime/test_api.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftc.cli.main import main
from ftc.compiler.diagnostics import SpecError
from ftc.compiler.spec.validate import parse
from ftc.runtime.api.config import load_config
from ftc.runtime.api.jobs import dump_toml, fine_tuned_name, job_spec
from ftc.runtime.api.requests import RequestProblem, parse_job_request
from ftc.runtime.api.store import page

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "sft.toml").write_text((REPO / "specs" / "quickstart.toml").read_text(encoding="utf-8"), encoding="utf-8")
    path = tmp_path / "api.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_reads_models_and_resolves_spec_paths(tmp_path):
    config = load_config(_config(tmp_path, '[server]\nport = 9000\n\n[models."smollm2-135m"]\nsupervised = "sft.toml"\n'))
    assert config.server.host == "127.0.0.1" and config.server.port == 9000
    assert config.spec_for("smollm2-135m", "supervised") == (tmp_path / "sft.toml").resolve()
    assert config.spec_for("smollm2-135m", "dpo") is None
    assert config.state == (tmp_path / "api-state").resolve()


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        ('[server]\nprot = 9000\n[models.a]\nsupervised = "sft.toml"\n', 2, "server.prot", "Extra inputs"),
        ('[server]\nhost = "0.0.0.0"\n[models.a]\nsupervised = "sft.toml"\n', 2, "server.host", "without a key"),
        ('[models.a]\nsupervised = "missing.toml"\n', 2, "models.a.supervised", "spec not found: missing.toml"),
        ('[models.a]\ndescription = "x"\n', 1, "models.a", "names no spec"),
        ('[server]\napi_key_env = "sk-live-123"\n[models.a]\nsupervised = "sft.toml"\n', 2, "server.api_key_env", "NAME of an environment variable"),
    ],
)
def test_config_problems_name_line_and_key(tmp_path, text, line, key, words):
    with pytest.raises(SpecError) as caught:
        load_config(_config(tmp_path, text))
    found = caught.value.diagnostics[0]
    assert (found.line, found.key) == (line, key) and words in found.message, found


def test_ftc_api_reports_a_bad_config_and_refuses_an_unset_key(tmp_path, capsys, monkeypatch):
    assert main(["api", str(_config(tmp_path, "[server]\nprot = 1\n[models.a]\nsupervised = \"sft.toml\"\n"))]) == 1
    assert "api.toml:2" in capsys.readouterr().err
    monkeypatch.delenv("FTC_API_UNSET_KEY", raising=False)
    good = _config(tmp_path, '[server]\napi_key_env = "FTC_API_UNSET_KEY"\n[models.a]\nsupervised = "sft.toml"\n')
    assert main(["api", str(good)]) == 2
    assert "FTC_API_UNSET_KEY, which is not set" in capsys.readouterr().err
    assert main(["api", str(tmp_path / "nope.toml")]) == 2


def _request(**fields):
    return parse_job_request({"model": "m", "training_file": "file-abc", **fields})


def test_request_settings_merge_the_deprecated_field_and_refuse_disagreement():
    assert _request(hyperparameters={"n_epochs": 2, "batch_size": "auto"}).settings() == {"n_epochs": 2}
    both = _request(hyperparameters={"n_epochs": 2}, method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 0.5}}})
    assert both.settings() == {"n_epochs": 2, "learning_rate_multiplier": 0.5}
    with pytest.raises(RequestProblem, match="disagrees"):
        _request(hyperparameters={"n_epochs": 2}, method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}})
    dpo = _request(method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}})
    assert dpo.method_type == "dpo" and dpo.settings() == {"beta": 0.2}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n_epochs": 3}, "n_epochs"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epoch": 1}}, "hyperparameters.n_epoch"),
        ({"suffix": "has space"}, "suffix"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
        ({"method": {"type": "dpo", "supervised": {}}}, "method.supervised"),
        ({"method": {"type": "dpo"}, "hyperparameters": {"n_epochs": 1}}, "hyperparameters"),
    ],
)
def test_request_problems_name_the_param(fields, param):
    with pytest.raises(RequestProblem) as caught:
        _request(**fields)
    assert caught.value.param == param and caught.value.status == 400


def test_job_spec_replaces_only_what_the_job_sets(tmp_path):
    template = REPO / "specs" / "quickstart.toml"
    request = _request(seed=7, method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 12, "learning_rate_multiplier": 0.5}}})
    raw = job_spec(template, "ftjob-abc", request, request.settings(), validation=False)
    original = tomllib.loads(template.read_text(encoding="utf-8"))
    assert raw["project"]["name"] == "ftjob-abc" and raw["project"]["seed"] == 7
    assert raw["data"]["train"] == "train.jsonl" and "validation" not in raw["data"] and raw["data"]["format"] == "auto"
    assert "evaluation" not in raw and "export" not in raw and "serve" not in raw  # nothing held out; the API serves
    assert raw["training"]["epochs"] == 2 and "max_steps" not in raw["training"]
    assert raw["training"]["batch_size"] == 12 and raw["training"]["micro_batch_size"] == 4  # gcd(12, 8): divides
    assert raw["training"]["learning_rate"] == pytest.approx(0.5 * original["training"]["learning_rate"])
    assert raw["method"] == original["method"] and raw["model"] == original["model"]  # pkg: stays as written
    # written out, it is a spec ftc validates, with the job's values
    (tmp_path / "spec.toml").write_text(dump_toml(raw), encoding="utf-8")
    (tmp_path / "train.jsonl").write_text((REPO / "specs" / "data" / "ticket_triage" / "train.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    loaded, diagnostics = parse(tmp_path / "spec.toml")
    assert loaded is not None, diagnostics
    assert loaded.spec.training.epochs == 2 and loaded.spec.project.name == "ftjob-abc"


def test_job_spec_makes_the_server_specs_paths_absolute(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "schema.json").write_text("{}", encoding="utf-8")
    template = tmp_path / "grpo.toml"
    template.write_text(
        '[project]\nname = "x"\n[model]\nbase = "model"\n[data]\ntrain = "t.jsonl"\nvalidation = "v.jsonl"\n'
        '[method]\nkind = "grpo"\n[[method.rewards]]\nkind = "json_schema"\nschema = "schema.json"\n[[method.rewards]]\nkind = "json_valid"\n',
        encoding="utf-8",
    )
    raw = job_spec(template, "ftjob-abc", _request(), {}, validation=True)
    assert raw["model"]["base"] == str((tmp_path / "model").resolve())
    assert raw["method"]["rewards"][0]["schema"] == str((tmp_path / "schema.json").resolve())
    assert raw["data"]["validation"] == "validation.jsonl"
    assert tomllib.loads(dump_toml(raw)) == raw


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_scalar = st.one_of(st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False), _text)
_values = st.dictionaries(st.text("abc_-", min_size=1, max_size=5), st.one_of(_scalar, st.lists(_scalar, max_size=3)), max_size=4)


@given(st.dictionaries(st.text("xyz", min_size=1, max_size=3), st.fixed_dictionaries({}, optional={"v": _values, "sub": _values, "rows": st.lists(_values, min_size=1, max_size=2)}), max_size=3))
def test_dump_toml_round_trips(raw):
    def flat(tables):  # a table's own values beside its subtables, as TOML writes them
        out = {}
        for name, table in tables.items():
            out[name] = {**table.get("v", {}), **({"sub": table["sub"]} if "sub" in table else {}), **({"rows": table["rows"]} if "rows" in table else {})}
        return out

    tables = flat(raw)
    assert tomllib.loads(dump_toml(tables)) == tables


def test_fine_tuned_names_and_pages():
    assert fine_tuned_name("smollm2", "triage", "ftjob-1") == "ft:smollm2:triage:ftjob-1"
    assert fine_tuned_name("smollm2", None, "ftjob-1") == "ft:smollm2::ftjob-1"
    items = [{"id": str(i)} for i in range(5)]
    assert page(items, None, 2) == {"object": "list", "data": items[:2], "has_more": True}
    assert page(items, "2", 5) == {"object": "list", "data": items[3:], "has_more": False}
    assert page(items, "nope", 5)["data"] == []


def _check(operation: str, reference: str, **more) -> dict:
    return {"type": "string_check", "name": "c", "input": "{{sample.output_text}}", "reference": reference, "operation": operation, **more}


@pytest.mark.parametrize(
    ("grader", "rewards", "field", "literal"),
    [
        (_check("eq", "{{item.answer}}"), [{"kind": "exact_match", "field": "answer", "weight": 1.0}], "answer", None),
        (_check("eq", "yes"), [{"kind": "regex", "pattern": r"\A\s*yes\s*\Z", "match": True, "weight": 1.0}], None, "yes"),
        (_check("ne", "a.b"), [{"kind": "regex", "pattern": r"\A\s*a\.b\s*\Z", "match": False, "weight": 1.0}], None, "a.b"),
        (_check("like", "(x)"), [{"kind": "regex", "pattern": r"\(x\)", "match": True, "weight": 1.0}], None, "(x)"),
        (
            {"type": "text_similarity", "name": "s", "input": "{{ sample.output_text }}", "reference": "{{ item.summary }}", "evaluation_metric": "rouge_l"},
            [{"kind": "similarity", "metric": "rouge_l", "field": "summary", "weight": 1.0}], "summary", None,
        ),
        (
            {"type": "multi", "name": "m", "calculate_output": "(a + 3 * b) / 4", "graders": {"a": _check("eq", "{{item.x}}"), "b": _check("like", "ok")}},
            [{"kind": "exact_match", "field": "x", "weight": 0.25}, {"kind": "regex", "pattern": "ok", "match": True, "weight": 0.75}], "x", "ok",
        ),
    ],
)
def test_graders_map_onto_rewards(grader, rewards, field, literal):
    from ftc.runtime.api.graders import rewards_for

    assert rewards_for(grader) == (rewards, field, literal)


@pytest.mark.parametrize(
    ("grader", "words"),
    [
        ({"type": "python", "source": "import os"}, "never runs code"),
        ({"type": "score_model", "model": "o3-mini", "input": []}, "trained reward model"),
        (_check("eq", "{{item.answer}}", input="{{item.question}}"), "sample.output_text"),
        (_check("like", "{{item.answer}}"), "one pattern"),
        (_check("eq", "{{sample.output_json.x}}"), "only {{item.FIELD}}"),
        ({"type": "text_similarity", "name": "s", "input": "{{sample.output_text}}", "reference": "{{item.a}}", "evaluation_metric": "bleu"}, "rouge_l"),
        ({"type": "multi", "name": "m", "calculate_output": "a * b", "graders": {"a": _check("eq", "x"), "b": _check("eq", "y")}}, "weighted sum"),
        ({"type": "multi", "name": "m", "calculate_output": "max(a, b)", "graders": {"a": _check("eq", "x"), "b": _check("eq", "y")}}, "weighted sum"),
    ],
)
def test_graders_refused_with_the_reason(grader, words):
    from ftc.runtime.api.graders import rewards_for

    with pytest.raises(RequestProblem) as caught:
        rewards_for(grader)
    assert words in caught.value.message and caught.value.param.startswith("method.reinforcement.grader")


def test_items_become_grpo_chats_line_for_line(tmp_path):
    from ftc.runtime.api.graders import items_to_chats

    source = tmp_path / "items.jsonl"
    source.write_text(
        '{"messages": [{"role": "user", "content": "2+2?"}], "answer": 4, "note": "x"}\n'
        "not json\n"
        '{"messages": [{"role": "user", "content": "3+3?"}], "note": "y"}\n',
        encoding="utf-8",
    )
    left_out, missing = items_to_chats(source, tmp_path / "chats.jsonl", "answer", None, {"answer"})
    lines = (tmp_path / "chats.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "answer": 4}'
    assert lines[1:] == ["not json", '{"messages": [{"role": "user", "content": "3+3?"}], "note": "y"}']  # the check names them
    assert left_out == {"note": 1} and missing == [3]
