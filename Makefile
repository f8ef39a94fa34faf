# Two commands for users (README): `make demo` runs the main job, `make test` runs the tests.
# Both create the environment of the chosen stack on first use:
#   STACK=pinned (default): .venv, Python 3.10, requirements.txt (Detectron2 from the registry)
#   STACK=latest:           .venv-latest, Python 3.12, requirements-latest.txt, and Detectron2
#                           built from DETECTRON2_SRC: a git URL, a source directory or a source
#                           archive (.tar.gz/.tgz/.zip); default the upstream git URL.
STACK ?= pinned
DETECTRON2_SRC ?= https://github.com/facebookresearch/detectron2.git
PYTEST_ARGS ?=
TESTS ?= tests

# find_python(X.Y): pythonX.Y on PATH (possibly a pyenv shim that is not activated), else pyenv's
# install of X.Y.
find_python = $(shell for p in python$(1) $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$(1).*/bin/python$(1) 2>/dev/null); do \
	[ "$$($$p -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$(1)" ] && { echo $$p; break; }; done)

ifeq ($(STACK),pinned)
VENV ?= .venv
REQUIREMENTS := requirements.txt
PYTHON_VERSION := 3.10
PYTHON310 ?= $(call find_python,3.10)
BASE_PYTHON = $(PYTHON310)
PYTHON_VAR := PYTHON310
else ifeq ($(STACK),latest)
VENV ?= .venv-latest
REQUIREMENTS := requirements-latest.txt
PYTHON_VERSION := 3.12
PYTHON312 ?= $(call find_python,3.12)
BASE_PYTHON = $(PYTHON312)
PYTHON_VAR := PYTHON312
else
$(error STACK must be 'pinned' or 'latest', got '$(STACK)')
endif
PY := $(VENV)/bin/python

.PHONY: env demo flops test clean-env

env: $(VENV)/.installed

# Reinstalling the package recompiles the C++ relation (rsp_d2._C) when its source changes.
$(VENV)/.installed: $(REQUIREMENTS) setup.py $(wildcard rsp_d2/layers/csrc/*.cpp)
	@test -n "$(BASE_PYTHON)" || { echo "error: Python $(PYTHON_VERSION) not found (tried python$(PYTHON_VERSION) and pyenv); set $(PYTHON_VAR)=/path/to/python$(PYTHON_VERSION)" >&2; exit 1; }
	test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel "setuptools<81"
	$(PY) -m pip install --quiet -r $(REQUIREMENTS)
ifeq ($(STACK),latest)
	$(MAKE) --no-print-directory detectron2-from-source PY=$(PY)
endif
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Detectron2 built from source against the venv's torch, as users of a current torch install it.
# An archive is unpacked under .d2/ first; a directory is built where it is (in-tree).
.PHONY: detectron2-from-source
detectron2-from-source:
	@set -e; src="$(DETECTRON2_SRC)"; \
	case "$$src" in \
	  *.tar.gz|*.tgz|*.zip) \
	    test -f "$$src" || { echo "error: DETECTRON2_SRC=$$src: no such archive" >&2; exit 2; }; \
	    dest=.d2/$$(basename "$$src" | sed 's/\.\(tar\.gz\|tgz\|zip\)$$//'); rm -rf "$$dest"; mkdir -p "$$dest"; \
	    case "$$src" in *.zip) $(PY) -m zipfile -e "$$src" "$$dest" ;; *) tar -xzf "$$src" -C "$$dest" ;; esac; \
	    dir=$$(dirname "$$(ls -d "$$dest"/setup.py "$$dest"/*/setup.py 2>/dev/null | head -n 1)"); \
	    test -f "$$dir/setup.py" || { echo "error: DETECTRON2_SRC=$$src: no setup.py at its top or one folder down" >&2; exit 2; }; \
	    target="$$dir" ;; \
	  *://*|git@*) target="git+$${src#git+}" ;; \
	  *) test -f "$$src/setup.py" || { echo "error: DETECTRON2_SRC=$$src: expected a git URL, a source archive or a directory with setup.py" >&2; exit 2; }; \
	     target="$$src" ;; \
	esac; \
	echo "Building Detectron2 from $$target (several minutes)"; \
	$(PY) -m pip install --quiet --no-build-isolation "$$target"

# The main job: RSP-4 trained from scratch on synthetic Cityscapes, evaluated with the official evaluator.
demo: env
	$(PY) tools/train_demo.py

# The head FLOPs/parameter tables of the paper, reproduced.
flops: env
	$(PY) tools/analyze_head.py --paper-tables

# TESTS: what to collect (a file, a folder). One worker per core (pytest-xdist; PYTEST_ARGS="-n 0"
# runs in one process); idle workers steal queued tests, so no core waits at the end.
test: env
	$(PY) -m pytest $(TESTS) -n auto --dist worksteal $(PYTEST_ARGS)

clean-env:
	rm -rf $(VENV)
