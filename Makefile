# Two commands: `make demo` and `make test`. Each creates .venv and installs everything
# from PyPI on first use (see shared/TOOLCHAIN.md for the verified versions).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/cellsp demo

# Verilator models are cached per config; a fresh checkout builds its own.
export CELLSP_CACHE ?= $(CURDIR)/.cellsp-cache

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/cellsp bench golden

clean:
	rm -rf $(VENV) build *.egg-info cellsp-report bench-results
