# Two commands: `make demo` and `make test`. Each creates .venv and installs everything
# from PyPI on first use (see shared/TOOLCHAIN.md for the verified versions).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,torch]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/cellsp demo

# Verilator models are cached per config in the one cache the CLI uses too: $CELLSP_CACHE, by
# default $XDG_CACHE_HOME/cellsp or ~/.cache/cellsp (keyed by config, gateware sources and tool
# versions, so a checkout never picks up another's stale model).

# The floor plan first (README, "The house"): import-linter's contracts in pyproject.toml.
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/cellsp bench golden

clean:
	rm -rf $(VENV) build *.egg-info cellsp-report bench-results
