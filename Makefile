# make test: fresh virtual environment, package with its test extra, whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test venv clean demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat

test: venv
	$(BIN)/python -m pytest

demo: venv
	$(BIN)/python -m signer.demo --out demo/out

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
