# formdigits: `make setup` once, then `make test`. See README.md.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# MNIST IDX files for offline work; override with `make test DIGITS_DATA=/path`.
DIGITS_DATA ?= $(abspath ../shared/data/mnist)
export DIGITS_DATA
# Real fields for the benchmark only (development set, never in the repository).
DIGITS_ROWID ?= $(abspath ../shared/data/rowid-dev)
export DIGITS_ROWID
DIGITS_CHEQUE ?= $(abspath ../shared/data/cheque-dev)
export DIGITS_CHEQUE
# Real labelled fields for the fine-tuning benchmark only.
DIGITS_ROWID_TRAIN ?= $(abspath ../shared/data/rowid-train)
export DIGITS_ROWID_TRAIN

.PHONY: setup system-packages test lint demo bench bundled-model clean

setup: system-packages $(BIN)/digits

# Debian packages the tests use: a real Prometheus server. Skipped when not root.
system-packages:
	@if ! command -v prometheus >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null \
	      && (pkill -x prometheus || true); \
	  else echo "note: install Debian's 'prometheus' package for the metrics tests"; fi; \
	fi

$(BIN)/digits: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# Every folder of Python code; lint-imports checks who may import whom (pyproject.toml).
CODE := recognizer serving jobs formdigits devstack tests bench

test: $(BIN)/digits
	$(BIN)/ruff check $(CODE)
	$(BIN)/lint-imports
	$(BIN)/pytest -q

lint: $(BIN)/digits
	$(BIN)/ruff check $(CODE)
	$(BIN)/lint-imports

# The dev stack is not installed: it runs from the repository root.
demo: $(BIN)/digits
	$(BIN)/python -m devstack.demo

bench: $(BIN)/digits
	$(BIN)/python -m bench.run --output bench/RESULTS.md

# The model the package ships (recognizer/bundled): `digits train` with its defaults.
# Rebuild and commit it whenever training changes.
bundled-model: $(BIN)/digits
	$(BIN)/python -m recognizer.training.bundle

clean:
	rm -rf $(VENV) *.egg-info runs out report
