# Two commands on a fresh machine: `make demo` and `make test`. Both create the virtual environment
# .venv if it is missing and install what they need into it, each behind its own stamp file:
# `make demo` torch and the `demos` extra; `make test` torch and the `test`, `demos` and `triton`
# extras (CI runs the Triton kernels under the Triton interpreter, on CPU). So `make demo` then
# `make test` installs only what the tests add. TORCH_VERSION picks the torch release (>= 2.13, the
# floor in pyproject.toml; only 2.13.0 has run the tests). TORCH_INDEX_URL, when set, is the index
# torch comes from, e.g. https://download.pytorch.org/whl/cpu for the CPU-only build.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := $(VENV)/.torch-$(TORCH_VERSION)

.PHONY: setup demo test lint bench wheel-check docs docs-check serve-docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# One torch in the venv: installing another TORCH_VERSION drops the previous version's stamp.
$(TORCH): | $(PY)
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	rm -f $(VENV)/.torch-*
	touch $@

$(VENV)/.installed-demos: $(TORCH) pyproject.toml
	$(PY) -m pip install -q -e ".[demos]"
	touch $@

# The test environment holds the demos' and lint's extras too: their stamps are touched with it.
$(VENV)/.installed-test: $(TORCH) pyproject.toml
	$(PY) -m pip install -q -e ".[test,demos,triton]"
	touch $@ $(VENV)/.installed-demos $(VENV)/.installed-lint

$(VENV)/.installed-lint: $(TORCH) pyproject.toml
	$(PY) -m pip install -q -e ".[lint]"
	touch $@

# Everything the test suite needs.
setup: $(VENV)/.installed-test

demo: $(VENV)/.installed-demos
	$(PY) demos/theta_recovery.py

test: $(VENV)/.installed-test
	GABORLAYER_STRICT_SKIPS=1 $(PY) -m pytest

# ruff (pyflakes, pycodestyle, bugbear, isort; configured in pyproject.toml) over the whole tree.
lint: $(VENV)/.installed-lint
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed-demos
	$(PY) benchmarks/bench_layer.py

# Build the sdist and the wheel, install the wheel into a fresh venv and check it there, all in a
# temporary directory (.ci/wheel-check says what it checks). `build` goes into .venv.
$(VENV)/.installed-build: | $(PY)
	$(PY) -m pip install -q "build>=1.2"
	touch $@

wheel-check: $(VENV)/.installed-build
	PY="$(PY)" PYTHON="$(PYTHON)" TORCH_VERSION="$(TORCH_VERSION)" TORCH_INDEX_URL="$(TORCH_INDEX_URL)" \
		bash .ci/wheel-check

# The documentation site (mkdocs-material + mkdocstrings): the `docs` extra in the same .venv.
$(VENV)/.installed-docs: $(TORCH) pyproject.toml
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Every page of the built site in headless Chromium at two widths (docs/check_site.py says what fails).
docs-check: docs
	$(PY) docs/check_site.py site

serve-docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis site
