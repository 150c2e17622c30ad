# The two commands: `make run` and `make test`. Both set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The suite runs on every core (pytest-xdist); TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= auto
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test bench setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/pip || { rm -rf $(VENV); $(PY) -m venv $(VENV) || { rm -rf $(VENV); echo "cannot create $(VENV): on Debian, apt-get install python3-venv" >&2; exit 1; }; }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/relay run --config config.example.yaml

test:
	scripts/setup-test-deps
	@$(MAKE) --no-print-directory $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data .pytest_cache
