# make run  — install, generate sample data, run the whole pipeline, print the top 5 customers
# make test — install and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench bench-serving bench-incremental bench-engines clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[postgres,mysql,spark,s3,dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	rm -rf .purchases
	$(BIN)/purchases demo --days 7 --rows 15000

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py

bench-serving: $(STAMP)
	$(BIN)/python bench/serving.py

bench-incremental: $(STAMP)
	$(BIN)/python bench/incremental.py

bench-engines: $(STAMP)
	$(BIN)/python bench/engines.py

clean:
	rm -rf .purchases build dist src/*.egg-info .pytest_cache .ruff_cache bench/out
