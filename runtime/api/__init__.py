"""`ftc api`: an OpenAI-compatible fine-tuning service: files, jobs, events, checkpoints and the tuned models, at one address."""
