# Two entry points for a fresh machine with only python3:
#   make demo   set up .venv (when missing) and run `pgu demo` on scikit-learn's bundled digits
#   make test   set up .venv (when missing) and run the test suite
#   make docs   regenerate the results pages from benchmarks/results/*.json and build the site (offline)
#   make lint   ruff, with the line limit and rules in pyproject.toml
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow docs lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,docs,lint]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pgu demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

docs: $(STAMP)
	$(BIN)/python docs/build_pages.py
	$(BIN)/python -m mkdocs build --strict --quiet --site-dir site

lint: $(STAMP)
	$(BIN)/python -m ruff check pgu tests benchmarks examples docs

clean:
	rm -rf $(VENV) runs .pytest_cache site
