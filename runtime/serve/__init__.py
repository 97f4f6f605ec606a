"""The serve stage: what to serve, the vLLM process, and the parity gate in front of it."""
