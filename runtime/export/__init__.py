"""`ftc export`: quantized copies of a run's merged/ (GGUF for llama.cpp and Ollama, compressed-tensors for vLLM),
each kept only when its parity gate against merged/ passes (run.py, gate.py)."""
