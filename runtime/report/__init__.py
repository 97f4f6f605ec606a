"""The report stage: one self-contained HTML page about a run."""
