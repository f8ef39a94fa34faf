# Two commands for users (README): `make demo` runs the main job, `make test` runs the tests.
# Both create the pinned Python 3.10 environment in .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# python3.10 may be a pyenv shim that is not activated; fall back to pyenv's install.
PYTHON310 ?= $(shell for p in python3.10 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10*/bin/python3.10 2>/dev/null); do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo $$p; break; }; done)
PYTEST_ARGS ?=

.PHONY: env demo flops test clean-env

env: $(VENV)/.installed

# Reinstalling the package recompiles the C++ relation (rsp_d2._C) when its source changes.
$(VENV)/.installed: requirements.txt setup.py $(wildcard rsp_d2/layers/csrc/*.cpp)
	@test -n "$(PYTHON310)" || { echo "error: Python 3.10 not found (tried python3.10 and pyenv); set PYTHON310=/path/to/python3.10" >&2; exit 1; }
	test -x $(PY) || $(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel "setuptools<81"
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The main job: RSP-4 trained from scratch on synthetic Cityscapes, evaluated with the official evaluator.
demo: env
	$(PY) tools/train_demo.py

# The head FLOPs/parameter tables of the paper, reproduced.
flops: env
	$(PY) tools/analyze_head.py --paper-tables

test: env
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean-env:
	rm -rf $(VENV)
