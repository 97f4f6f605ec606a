"""Can vLLM serve peft's prompt tuning and P-tuning through prompt_embeds, token for token?

On a tiny random Llama (head_dim 64, weights std 0.2 so that greedy answers vary), build a PromptTuningConfig
adapter (random init) and a PromptEncoderConfig (P-tuning) adapter (a few optimizer steps), save and reload
them as `ftc eval` does (PeftModel.from_pretrained, inference mode), and compare transformers' greedy
PeftModel.generate with vLLM's greedy answer to the same chat prompts sent as prompt_embeds: the adapter's
saved prompt_embeddings [num_virtual_tokens, hidden] followed by the base's embeddings of the rendered prompt.

    python bench/prompt_embeds_parity.py [--prompts 8] [--tokens 32] [--dtype float32]

Prints per adapter and prompt whether the tokens agree, and where they first differ.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PROMPTS = [
    "Hello! Who are you?",
    "Write one sentence about the sea.",
    "What is 12 + 30?",
    "List three colours.",
    "Translate 'good morning' into French.",
    "Summarise: the meeting moved to Tuesday at 10am.",
    "Give me a haiku about autumn.",
    "Explain what an API is in one sentence.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_base(folder: Path) -> Path:
    import torch
    from tiny import make_tiny_llama
    from transformers import AutoModelForCausalLM

    make_tiny_llama(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 0.2)
    model.save_pretrained(folder)
    return folder


def make_adapter(base: Path, kind: str, out: Path, tokenizer) -> Path:
    import torch
    from peft import PromptEncoderConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if kind == "prompt_tuning":
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8)
    else:
        config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=8, encoder_hidden_size=64)
    torch.manual_seed(1)
    peft_model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=0.1)
    ids = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")["input_ids"]
    for _ in range(5):
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(out)
    return out


def embeds_payload(base_model, saved: Path, ids: list[int]) -> str:
    """base64 of torch.save([virtual tokens; embeddings of ids]), float32."""
    import torch
    from safetensors.torch import load_file

    virtual = load_file(str(saved / "adapter_model.safetensors"))["prompt_embeddings"].float()
    with torch.no_grad():
        embeds = base_model.get_input_embeddings()(torch.tensor(ids)).float()
    tensor = torch.cat([virtual, embeds], dim=0).contiguous()
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--cache", action="store_true", help="transformers generates with its KV cache (wrong with peft 0.21.2)")
    args = parser.parse_args()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    work = Path(tempfile.mkdtemp(prefix="ftc-embeds-"))
    base_dir = make_base(work / "base")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    adapters = {kind: make_adapter(base_dir, kind, work / kind, tokenizer) for kind in ("prompt_tuning", "p_tuning")}
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False) for p in PROMPTS[: args.prompts]]
    prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    # use_cache=False: peft 0.21.2's prepare_inputs_for_generation looks for model_kwargs["past_key_values"], which
    # transformers 5.25 calls "cache"; with the cache on it prepends the virtual tokens again at every step
    config = GenerationConfig(do_sample=False, max_new_tokens=args.tokens, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, use_cache=args.cache)
    reference: dict[str, list[list[int]]] = {}
    for kind, saved in adapters.items():
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, saved).eval()
        answers = []
        for ids in prompt_ids:
            tensor = torch.tensor([ids])
            with torch.inference_mode():
                output = model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor), generation_config=config)
            answers.append(output[0, len(ids):].tolist())
        reference[kind] = answers
    plain_base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)

    port = free_port()
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    log = work / "vllm.log"
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base_dir), "--served-model-name", "tiny",
            "--port", str(port), "--dtype", args.dtype, "--enforce-eager", "--max-num-seqs", "4", "--seed", "0",
            "--enable-prompt-embeds", "--load-format", "safetensors"]
    began = time.monotonic()
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        print(f"vLLM up after {time.monotonic() - began:.0f}s")
        total_agree = 0
        for kind, saved in adapters.items():
            agree = 0
            for k, ids in enumerate(prompt_ids):
                body = {"model": "tiny", "prompt_embeds": embeds_payload(plain_base, saved, ids), "max_tokens": args.tokens,
                        "temperature": 0, "return_token_ids": True, "logprobs": 1}
                request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=600) as r:
                    reply = json.loads(r.read())
                got = reply["choices"][0]["token_ids"]
                want = reference[kind][k]
                first = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), None)
                same = got == want
                agree += same
                top = reply["choices"][0]["logprobs"]["token_logprobs"][:3]
                print(f"{kind} prompt {k}: {'agree' if same else 'DIFFER at ' + str(first)} ({len(want)}/{len(got)} tokens) first logprobs {top}")
                if not same:
                    print("  transformers", want, "\n  vllm        ", got)
            print(f"{kind}: {agree}/{len(prompt_ids)} prompts agree on {args.tokens} tokens")
            total_agree += agree
        return 0 if total_agree == 2 * len(prompt_ids) else 1
    finally:
        proc.send_signal(2)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


if __name__ == "__main__":
    sys.exit(main())
