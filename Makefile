# Two commands matter (see README): `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test setup system-deps bench clean

$(BIN)/streamproc: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: system-deps $(BIN)/streamproc

system-deps:
	@./scripts/install-system-deps.sh

demo: setup
	$(BIN)/streamproc demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) streamproc-data test-artifacts .pytest_cache .hypothesis
