# KD Playground: `make run` starts the app, `make test` runs the tests.
# Each creates .venv in the repository root when it is missing and installs requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501
NOTEBOOK_PORT ?= 8888
ADDRESS ?= localhost
# tests run on this many pytest-xdist workers (each with its own test home): the 2-core machine
# spends much of a test waiting on an interpreter's start or a browser, so two keep both busy
WORKERS ?= 2

.PHONY: run test test-fast lint format notebook bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

run: venv
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.address $(ADDRESS) --browser.gatherUsageStats false

# JupyterLab on the interactive tour (same .venv); NOTEBOOK_ARGS passes more options (e.g. --no-browser).
# As root (a container, CI) Jupyter refuses to start without --allow-root.
notebook: venv
	$(PY) -m jupyter lab notebooks/kd_tour.ipynb --ServerApp.ip=$(ADDRESS) --ServerApp.port=$(NOTEBOOK_PORT) \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(NOTEBOOK_ARGS)

# pytest exits 5 when it collected no test: make that a loud failure, not a pass.
test: venv
	@$(PY) -m pytest -n $(WORKERS) --dist worksteal $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# everything but the slow browser and training tests
test-fast: venv
	@$(PY) -m pytest -n $(WORKERS) --dist worksteal -m "not slow and not browser" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# ruff's lint and format check (settings in pyproject.toml); `make format` rewrites the tree
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: venv
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
