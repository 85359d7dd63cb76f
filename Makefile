# Two commands on a fresh machine: `make demo` and `make test`. Each creates its own virtual
# environment (.venv) and installs everything. Override TORCH_VERSION to test another torch.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench docs serve-docs clean

$(VENV)/.installed-$(TORCH_VERSION): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[test,demos,triton]"
	touch $@

setup: $(VENV)/.installed-$(TORCH_VERSION)

demo: setup
	$(PY) demos/theta_recovery.py

test: setup
	GABORLAYER_STRICT_SKIPS=1 $(PY) -m pytest

# ruff (pyflakes, pycodestyle, bugbear, isort; configured in pyproject.toml) over the whole tree.
lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/bench_layer.py

# The documentation site (mkdocs-material + mkdocstrings): the `docs` extra in the same .venv.
$(VENV)/.installed-docs: $(VENV)/.installed-$(TORCH_VERSION) pyproject.toml
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

serve-docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis site
