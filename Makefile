# gearsx developer commands. `make demo` and `make test` bootstrap everything they need:
# a virtual environment in .venv, the CPU build of torch, then the project with its dev tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gearsx-installed
DEMO_OUT ?= gearsx_demo_output

.PHONY: install demo demo-figure test test-oldest test-newest lint docs tutorials clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the dependency list changes (idempotent).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet --group dev -e ".[squidpy,dask,transport]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/gearsx demo --out $(DEMO_OUT)

# The README / "How it works" figure from the demo's layouts, 1600 px wide with a 256-colour palette
# (the demo's own 2280 px RGBA file is four times the size).
demo-figure: demo
	$(BIN)/python -c "from PIL import Image; im = Image.open('$(DEMO_OUT)/layouts.png').convert('RGB'); \
	im.resize((1600, round(im.height * 1600 / im.width)), Image.LANCZOS).quantize(256).save('docs/_static/gears_layouts.png', optimize=True)"

lint: install
	$(BIN)/ruff check src tests benchmarks docs tutorials
	$(BIN)/ruff format --check src tests benchmarks docs tutorials

test: install
	$(MAKE) lint
	MPLBACKEND=agg $(BIN)/python -m pytest
	$(MAKE) docs

# The test suite on the oldest release of every runtime dependency (.ci/oldest.txt, pyproject.toml's lower
# bounds), in a venv of its own; bounds that no test had run on were wrong (about 10 minutes on 2 cores;
# CI runs it after `make test`).
VENV_OLDEST := .venv-oldest
test-oldest:
	$(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install --quiet --upgrade "pip>=25.1"
	$(VENV_OLDEST)/bin/python -m pip install --quiet torch==2.13.0
	$(VENV_OLDEST)/bin/python -m pip install --quiet -c .ci/oldest.txt --group test -e ".[dask]"
	MPLBACKEND=agg $(VENV_OLDEST)/bin/python -m pytest -p no:cacheprovider

# The test suite on the newest Python and the newest release of every dependency, torch included: what a
# plain `pip install gearsx` gives a user on Python 3.12 or later (anndata 0.13, pandas 3, scanpy 1.12,
# torch 2.15 and lightning 2.6 on 6 December 2026; on make install's Python 3.11 the newest are older:
# anndata 0.13, scanpy 1.12, NumPy 2.5 and SciPy 1.18 need Python 3.12, and anndata 0.12 caps pandas
# below 3). PIP_CONFIG_FILE=/dev/null (no pip configuration file is read): the machines CI uses cap torch
# machine-wide at the releases on their disk (/etc/xdg/pip), which would hold the newest torch back; pip takes its CUDA build from PyPI (about
# 3 GB, two minutes here). With the doc group and the squidpy extra, so that the tutorials and squidpy's
# interoperability run there too. About 15 minutes on 2 cores; CI runs it after `make test-oldest`.
VENV_NEWEST := .venv-newest
PYTHON_NEWEST ?= $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13))),python3.13)
test-newest:
	$(PYTHON_NEWEST) -m venv $(VENV_NEWEST)
	$(VENV_NEWEST)/bin/python -m pip install --quiet --upgrade "pip>=25.1"
	PIP_CONFIG_FILE=/dev/null $(VENV_NEWEST)/bin/python -m pip install --quiet --upgrade --group test --group doc \
		-e ".[dask,squidpy,transport]" torch
	$(VENV_NEWEST)/bin/python -c "from importlib.metadata import version; \
	print('newest:', *(f'{p} {version(p)}' for p in ('torch', 'lightning', 'anndata', 'pandas', 'scanpy', 'numpy')))"
	MPLBACKEND=agg $(VENV_NEWEST)/bin/python -m pytest -p no:cacheprovider

docs: install
	rm -rf docs/_build docs/api/generated
	PYTHONWARNINGS=ignore::DeprecationWarning $(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# Execute the tutorials at full size and store their outputs (about 10 minutes on 2 cores; the peers of
# tutorials 02 and 04 come from the bench group). The test suite runs them at a small size only and never
# compares with the stored outputs: run this after any change of a default or of a benchmark figure they show.
tutorials: install
	$(BIN)/python -m pip install --quiet --group bench
	cd tutorials && env -u GEARSX_TUTORIAL_SMALL -u MPLBACKEND ../$(BIN)/jupyter-execute --inplace --timeout=1800 *.ipynb

clean:
	rm -rf docs/_build docs/api/generated $(DEMO_OUT) .pytest_cache
