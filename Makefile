# make demo: the one-command demo (a throw-away signer and client at work).
# make test: virtual environment in .venv, package with its test extra, whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstalled whenever the package metadata changes.
STAMP := $(VENV)/.installed

.PHONY: test venv clean demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# An editable install in compat mode puts the checkout on sys.path, so that
# twistd finds the plugins in twisted/plugins/ of the checkout.
$(STAMP): $(BIN)/python setup.py setup.cfg
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	$(BIN)/python -c 'import signer, twisted, serial, pymysql, cryptography, gnupg, pytest_twisted'
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest

demo: venv
	$(BIN)/python -m signer.demo --out demo/out

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis demo/out
