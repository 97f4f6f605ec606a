"""The data stage: read, check, clean, split, tokenize and pack the examples a spec names."""
