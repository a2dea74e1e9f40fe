# make run  — install, generate sample data, run the whole pipeline, print the top 5 customers
# make test — install, lint, security checks (bandit, pip-audit), then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint security bandit audit check-extras bench bench-serving bench-incremental bench-engines clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[postgres,mysql,spark,s3,dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	rm -rf .purchases
	$(BIN)/purchases demo --days 7 --rows 15000

# Lint and security run first, so a lint error or a bandit finding fails `make test` (and CI).
test: $(STAMP) lint security
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

security: bandit audit

# No medium/high finding in src/ without an inline `# nosec BXXX  # <why>` ([tool.bandit]).
bandit: $(STAMP)
	$(BIN)/python .ci/bandit-check

# Known vulnerabilities in the installed packages; says NOT AUDITED when no service answers.
audit: $(STAMP)
	$(BIN)/python .ci/audit-deps

# Every extra resolves in fresh venvs with Python's bundled pip and the newest pip (slow: minutes).
check-extras:
	.ci/check-extras

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
