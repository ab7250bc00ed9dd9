# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lab lint bench clean

demo: $(VENV)/.installed-demo  ## run notebooks/quickstart.ipynb in a real kernel, print miss and hit times
	$(BIN)/python scripts/run_demo.py notebooks/quickstart.ipynb

test: $(VENV)/.installed-test  ## the whole suite: lint, types, unit, notebooks, browser
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-redis.sh
	$(BIN)/ruff check ipycache_ext tests scripts benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

lab: $(VENV)/.installed-test  ## open JupyterLab on notebooks/ (also as root, e.g. in a container)
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks --allow-root $(LAB_ARGS)

.PHONY: team-demo
team-demo: $(VENV)/.installed-demo  ## a local redis-server, two kernels, two users: the second one's slow cell is a hit
	bash scripts/ensure-redis.sh
	$(BIN)/python scripts/team_demo.py notebooks/team.ipynb

lint: $(VENV)/.installed-test
	$(BIN)/ruff check ipycache_ext tests scripts benchmarks
	$(BIN)/mypy

bench: $(VENV)/.installed-test  ## peers (streamlit, joblib) are installed for the benchmark only
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
