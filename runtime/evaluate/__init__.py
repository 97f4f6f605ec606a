"""The evaluate stage: base against tuned on held-out examples, metrics, gates, diagnosis."""
