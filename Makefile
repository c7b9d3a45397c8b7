# The two commands of a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-train demo test test-fast bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

$(BIN)/.installed-train: $(BIN)/.installed
	$(BIN)/pip install -q -e ".[dev,train]"
	touch $@

install: $(BIN)/.installed
install-train: $(BIN)/.installed-train

demo: $(BIN)/.installed
	$(BIN)/anycode complete examples/demo.py:4:11

test: $(BIN)/.installed-train
	command -v nvim >/dev/null || (apt-get update -qq && apt-get install -y -qq neovim >/dev/null)
	$(BIN)/python -m pytest -q -p no:cacheprovider

# the suite without its slow end-to-end runs (pyproject.toml's `slow` marker)
test-fast: $(BIN)/.installed-train
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not soak"

# completion latency, memory, start-up: the measured sections of docs/bench.md, in process
# (model/bench.py), then through LSP with holebench on the same test split, nothing typed and the first
# 2 and 3 tokens of each hole typed (server/bench.py), then
# the soak, fuzz and 10 MB file through a raw client (server/soak.py; SOAK_FLAGS, e.g.
# "--soak-beam 2 --soak-budget-ms 100" to bound the soak's run time on a slow machine)
HOLEBENCH ?= ../shared/bench/holebench.py
TEST_SPLIT ?= data/corpus/python/test
SOAK_FLAGS ?=
bench: $(BIN)/.installed-train
	$(BIN)/python -m anycode.model.bench --out docs/bench.md
	$(BIN)/python -m anycode.server.bench --out docs/bench.md \
		$$(test -f $(HOLEBENCH) && echo --holebench $(HOLEBENCH)) $$(test -d $(TEST_SPLIT) && echo $(TEST_SPLIT))
	$(BIN)/python -m anycode.server.soak --out docs/bench.md $(SOAK_FLAGS)
	test ! -d $(TEST_SPLIT) || $(BIN)/python -m anycode.model.search_bench --out docs/bench.md --corpus $(TEST_SPLIT)

clean:
	rm -rf $(VENV) build dist *.egg-info
