# Two entry points: `make demo` (the main job) and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A plain `torch` requirement can pull a multi-GB CUDA build: install the wanted build first.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.hiveling-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Hiveling needs Python 3.11 or newer: set PYTHON=python3.11"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV) || { \
		echo "python3 -m venv failed: install the venv module (Debian: apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(PY) -m hiveling.core.trial

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/w1.py

clean:
	rm -rf $(VENV) build *.egg-info
