# Two entry points: `make demo` (set up + run the main job on CPU) and `make test`.
# `make methods`: every method in one table, and ROAR, on the synthetic tasks (CPU).
# `make docs` builds the documentation site (docs/ -> site/), `make docs-serve` serves it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo methods test lint docs docs-serve clean gpu-check

setup: $(STAMP)

$(STAMP): requirements.txt requirements-fairseq.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# fairseq's own metadata asks for torchaudio, which has no CPU wheel here: install it
	# without dependencies (requirements.txt already holds what it really needs).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-fairseq.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(PY) scripts/demo.py $(DEMO_ARGS)

# Quick schedules that fit a CPU: shorter training than the pipelines' own --quick.
methods: setup
	$(PY) analysis/compare_methods.py --quick --out outputs/methods \
		--translation-variant standard hard --majority-class-updates 300 \
		--translation-updates 500 200 $(COMPARE_ARGS)
	$(PY) scripts/run_roar.py --quick --out outputs/methods/roar $(ROAR_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# On a machine with CUDA: the tests marked cuda, then the benchmark's CUDA configurations.
# GPU_PY: an interpreter whose torch is a CUDA build (.venv pins the CPU wheel).
GPU_PY ?= $(PY)
gpu-check:
	$(GPU_PY) scripts/gpu_check.py $(GPU_ARGS)

lint: setup
	$(PY) -m ruff check .

# The documentation site (docs/ -> site/); --strict turns broken links and references into errors.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict

clean:
	rm -rf $(VENV) outputs site
