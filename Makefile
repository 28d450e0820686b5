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

## soak: 30 consecutive full sandbox runs in one process: no growth in open files, threads or
## child processes, nothing left on the target, the same results every time
soak: setup
	LABRUNNER_SOAK_COUNT=$${LABRUNNER_SOAK_COUNT:-30} $(BIN)/pytest tests/integration/test_soak.py $(PYTEST_ARGS)

## fuzz: 5,000 mutated captures through the analysis (on every core), and 200 examples of the
## property that resegmenting a stream keeps its dialogue
fuzz: setup
	LABRUNNER_FUZZ_COUNT=$${LABRUNNER_FUZZ_COUNT:-5000} LABRUNNER_FUZZ_EXAMPLES=$${LABRUNNER_FUZZ_EXAMPLES:-200} \
		$(BIN)/pytest tests/unit/test_fuzz_analysis.py $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check labrunner tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
