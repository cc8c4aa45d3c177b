# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export YOLO_OFFLINE := 1

.PHONY: demo test lint install bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch comes first and pinned: these builds lie on local disk here and are on PyPI elsewhere.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gradkit demo

# ruff, then the architecture's import rules ([tool.importlinter] in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check plugin tests benchmarks
	PYTHONPATH=plugin $(BIN)/lint-imports --no-cache

# Two worker processes (pytest-xdist): the end-to-end tests spend much of their time outside torch's
# kernels (data loading, Python), so two at a time on 2 cores take ~9 min instead of ~15.
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) runs build *.egg-info
