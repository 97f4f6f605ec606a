"""Run a training script unchanged and measure what its Trainer actually processed, step by step.

    python bench/token_probe.py RESULT.json STEPS SCRIPT.py [SCRIPT ARGS...]

The script runs as `python SCRIPT.py ARGS` would (runpy, as __main__), with two additions made from outside:
transformers' Trainer.training_step counts every micro-batch it is handed, and a callback records the time
at the end of each optimizer step. The same probe measures ftc's generated train.py and the baseline, so
both sides are counted the same way:

  real tokens   attention_mask.sum() when the batch has a mask (padded batches); a padding-free packed batch
                (trl's bfd packing: one row, position_ids, cu_seq_lens, no mask) has no padding, which is
                checked: its sequence boundaries must cover every slot.
  slots         input_ids.numel(): every position the model computed, padding included
  loss tokens   labels != -100

Trainer's own count (include_num_input_tokens_seen="non_padding") is not used: without an attention mask it
counts input_ids != pad_token_id, and where the pad token is the end-of-turn token that drops real tokens.

After step STEPS the probe writes RESULT.json and ends the process at once (os._exit), so that neither side
spends time saving checkpoints or the final model. On CUDA it synchronizes before each timestamp and records
torch.cuda.max_memory_allocated().
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time


def batch_counts(inputs) -> dict[str, int]:
    ids = inputs["input_ids"]
    labels = inputs.get("labels")
    slots = ids.numel()
    if "attention_mask" in inputs:
        mask = inputs["attention_mask"]
        real = int(mask.sum())
        sequences = int((mask.sum(-1) > 0).sum()) if mask.dim() == 2 else ids.shape[0]
    else:
        cu = inputs.get("cu_seq_lens_q")
        if cu is None or ids.shape[0] != 1:
            raise SystemExit("token_probe: a batch without attention_mask that is not a padding-free packed row; cannot count its padding")
        if int(cu[-1]) != slots:
            raise SystemExit(f"token_probe: packed row of {slots} slots, sequence boundaries cover {int(cu[-1])}")
        real = slots  # one row of whole sequences end to end: no padding
        sequences = cu.numel() - 1
    return {
        "real_tokens": real,
        "slots": slots,
        "loss_tokens": int((labels != -100).sum()) if labels is not None else real,
        "rows": ids.shape[0],
        "row_length": ids.shape[-1],
        "sequences": sequences,
    }


def install(result_path: str, stop_after: int) -> None:
    import torch
    from transformers import Trainer, TrainerCallback

    cuda = torch.cuda.is_available()
    pending = {"real_tokens": 0, "slots": 0, "loss_tokens": 0, "micro_batches": 0, "sequences": 0, "max_row_length": 0}
    record = {"steps": [], "logs": [], "stop_after": stop_after, "micro_batch_shapes": []}

    original_step = Trainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        counts = batch_counts(inputs)
        for key in ("real_tokens", "slots", "loss_tokens", "sequences"):
            pending[key] += counts[key]
        pending["micro_batches"] += 1
        pending["max_row_length"] = max(pending["max_row_length"], counts["row_length"])
        if len(record["micro_batch_shapes"]) < 8:
            record["micro_batch_shapes"].append([counts["rows"], counts["row_length"]])
        return original_step(self, model, inputs, *args, **kwargs)

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            record["train_begin"] = time.perf_counter()
            record["threads"] = torch.get_num_threads()
            record["device"] = torch.cuda.get_device_name() if cuda else "cpu"
            record["gradient_accumulation_steps"] = args.gradient_accumulation_steps
            record["trainable_parameters"] = sum(p.numel() for p in kwargs["model"].parameters() if p.requires_grad)
            record["parameters"] = sum(p.numel() for p in kwargs["model"].parameters())

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            record["steps"].append({"step": state.global_step, "time": time.perf_counter(), **pending})
            for key in pending:
                pending[key] = 0
            if state.global_step >= stop_after:
                finish()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                record["logs"].append({"step": state.global_step, "loss": logs["loss"]})

    def finish():
        record["peak_memory_bytes"] = torch.cuda.max_memory_allocated() if cuda else None
        with open(result_path, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    original_init = Trainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(Probe())

    Trainer.training_step = training_step
    Trainer.__init__ = init


def main() -> None:
    if len(sys.argv) < 4:
        raise SystemExit(__doc__.split("\n\n")[1])
    result_path, stop_after, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    install(result_path, stop_after)
    sys.argv = [script, *sys.argv[4:]]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    raise SystemExit(f"token_probe: {script} ended before step {stop_after}")


if __name__ == "__main__":
    main()
