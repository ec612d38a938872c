# Two entry points: `make demo` (the main job) and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A plain `torch` requirement can pull a multi-GB CUDA build: install the wanted build first.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.hiveling-installed

# The tray's end-to-end test needs an X server, a tray host and xdotool; Qt's xcb plugin needs a few
# libraries. Installed when missing and we may (root with apt-get, as in CI); the test skips otherwise.
APT_TOOLS := xvfb trayer xdotool imagemagick x11-utils
APT_LIBRARIES := libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 \
	libxcb-randr0 libxcb-render-util0 libxcb-image0

.PHONY: demo test lint bench clean system-packages

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
	$(VENV)/bin/hiveling demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

system-packages:
	@if ! command -v Xvfb >/dev/null || ! command -v trayer >/dev/null || ! command -v xdotool >/dev/null \
		|| ! command -v import >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing the X test tools: $(APT_TOOLS)"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				$(APT_TOOLS) >/dev/null) || echo "Could not install them: the X end-to-end test will be skipped"; \
			for lib in $(APT_LIBRARIES); do \
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$lib >/dev/null 2>&1 \
					|| echo "(no $$lib here)"; \
			done; \
		else \
			echo "Xvfb/trayer/xdotool/imagemagick missing: the X end-to-end test will be skipped"; \
		fi; \
	fi

test: lint system-packages
	$(VENV)/bin/pytest -q -p no:cacheprovider -n 2 --durations=25

bench: $(STAMP)
	$(PY) bench/w1.py

clean:
	rm -rf $(VENV) build *.egg-info
