# Two commands for a fresh machine (see README.md):
#   make study   runs the default study (synthetic data unless real data is configured), CPU or GPU
#   make test    runs the unit tests and the notebooks (nbval)
# Each creates the virtual environment in .venv and installs hpelib into it when needed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hpelib-installed
STUDY  ?= studies/default.yaml
OUT    ?= results/default
JOBS   ?= 2
PYTEST_ARGS ?=
LAB_ARGS ?=

.PHONY: study test lab benchmark gpu-check venv clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	@touch $(STAMP)

study: $(STAMP)
	$(BIN)/python -m hpelib.study $(STUDY) --out $(OUT) --jobs $(JOBS)

test: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider tests notebooks $(PYTEST_ARGS)

lab: $(STAMP)
	$(BIN)/python -m hpelib.lab $(LAB_ARGS)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

clean-venv:
	rm -rf $(VENV)
