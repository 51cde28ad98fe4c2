# Two entry points for a fresh machine: `make demo` (whole pipeline on the embedded demo) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
CORES  ?= all
# pytest workers (pytest-xdist), each given whole test files, the longest first (tests/conftest.py): the
# workflow file waits on Snakemake and SLURM while the other worker runs the rest
TEST_WORKERS ?= 2

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: install install-dev demo test docs lint style format-check clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# development tools (docs site, ruff, mypy, pre-commit): `make test` needs them, `make demo` does not
install-dev: $(DEV_STAMP)

$(DEV_STAMP): requirements-dev.txt $(STAMP)
	$(BIN)/pip install --disable-pip-version-check -r requirements-dev.txt
	touch $(DEV_STAMP)

demo: install
	$(BIN)/snakemake --cores $(CORES)

# mypy runs as a test (tests/test_static_checks.py), on a worker beside the workflow tests
test: install-dev format-check
	$(BIN)/mkdocs build --strict
	$(BIN)/pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# the documentation site at http://127.0.0.1:8000, rebuilt on every edit
docs: install-dev
	$(BIN)/mkdocs serve

lint: install
	$(BIN)/snakemake --lint

# formatting and static checks (pre-commit runs format-check on commit); `make test` runs both
style: format-check
	$(BIN)/mypy

format-check: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules

clean:
	rm -rf results logs resources/demo .snakemake site
