# The two commands of the README: `make demo` and `make test`. Both set everything up first.
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test test-quick lint soak fuzz bench clean

$(VENV)/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(VENV)/.setup-done

## demo: set up, start the sandbox lab, run every scenario, print the path of the PDF
demo: setup
	$(BIN)/labrunner sandbox up
	$(BIN)/labrunner run

## test: set up, lint, type-check, and run the whole test suite (unit + sandbox integration)
test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)

## test-quick: the fast tests only (no sandbox)
test-quick: setup
	$(BIN)/pytest -m "not integration and not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check labrunner tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
