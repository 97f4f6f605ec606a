"""OpenAI's fine-tuning guide, as its readers wrote it, run against `ftc api` on your own machine.

This is the code of OpenAI's "supervised fine-tuning" guide: upload a JSONL file of chats, create a job, wait for it,
list its events and checkpoints, and ask the fine-tuned model. Against OpenAI it ran with
`OpenAI()` and `model="gpt-4o-mini-2024-07-18"`. Against ftc api two things change, and nothing else:

    client = OpenAI(base_url="http://127.0.0.1:8100/v1")      # where `ftc api api.toml` listens
    model = "smollm2-135m"                                      # a base model that api.toml offers

The key is read from OPENAI_API_KEY as the openai client always reads it (set it to the value of the variable that
api.toml's api_key_env names). Run:

    ftc api api.toml &
    OPENAI_API_KEY=... python examples/openai_migration.py --base-url http://127.0.0.1:8100/v1 \
        --model smollm2-135m --train specs/data/ticket_triage/train.jsonl
"""

from __future__ import annotations

import argparse
import time

from openai import OpenAI


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True, help="ftc api's address, e.g. http://127.0.0.1:8100/v1")
    parser.add_argument("--model", required=True, help="a base model the server offers")
    parser.add_argument("--train", required=True, help="training chats, one {\"messages\": [...]} per line")
    parser.add_argument("--validation", help="held-out chats in the same format")
    parser.add_argument("--suffix", default="migrated")
    parser.add_argument("--question", default="My invoice shows the wrong amount. Can you fix it?")
    args = parser.parse_args()

    client = OpenAI(base_url=args.base_url)  # the one line that differs from OpenAI's guide (and the model name)

    # --- from here on, OpenAI's fine-tuning guide, unchanged ---
    training_file = client.files.create(file=open(args.train, "rb"), purpose="fine-tune")
    validation_file = client.files.create(file=open(args.validation, "rb"), purpose="fine-tune") if args.validation else None
    job = client.fine_tuning.jobs.create(
        training_file=training_file.id,
        validation_file=validation_file.id if validation_file else None,
        model=args.model,
        suffix=args.suffix,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "auto"}}},
    )
    print(f"created {job.id} ({job.status})")
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(2)
        job = client.fine_tuning.jobs.retrieve(job.id)
    print(f"{job.id}: {job.status}; hyperparameters: {job.method.supervised.hyperparameters}")
    for event in reversed(client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=50).data):
        print(f"  [{event.level}] {event.message.splitlines()[0]}")
    if job.status != "succeeded":
        print(f"error: {job.error.message if job.error else job.status}")
        return 1
    for checkpoint in client.fine_tuning.jobs.checkpoints.list(job.id).data:
        print(f"  checkpoint at step {checkpoint.step_number}: {checkpoint.metrics}")

    completion = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": args.question}],
        temperature=0,
        max_tokens=64,
    )
    print(f"{job.fine_tuned_model} answers: {completion.choices[0].message.content}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
