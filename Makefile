# make run  — install the embedded default only, generate sample data, run the whole pipeline,
#             print the top 5 customers
# make test — install everything, lint, security checks (bandit, pip-audit), the deployment
#             validators, then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Two stamps: `make run` needs only the embedded default (DuckDB + SQLite), not Spark's 300 MB.
BASE_STAMP := $(VENV)/.installed-base
STAMP      := $(VENV)/.installed
# Tools beyond the Python venv: npm packages pinned by package-lock.json (asl-validator,
# aws-local-stepfunctions), and the deployment validators in a venv of their own (checkov's
# pins clash with the runtime's botocore).
NODE_STAMP := node_modules/.installed
LINT_VENV  := .venv-deploy-lint
LINT_STAMP := $(LINT_VENV)/.installed

.PHONY: install run test lint security bandit audit validate-deploy browser check-extras bench bench-serving bench-incremental bench-engines clean

$(BASE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(BASE_STAMP)

$(STAMP): $(BASE_STAMP)
	$(BIN)/pip install --quiet -e '.[postgres,mysql,spark,s3,lineage,dev]'
	touch $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(LINT_STAMP): deploy/lint-requirements.txt
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet --upgrade pip
	$(LINT_VENV)/bin/pip install --quiet -r deploy/lint-requirements.txt
	touch $(LINT_STAMP)

install: $(STAMP) $(NODE_STAMP) $(LINT_STAMP)

run: $(BASE_STAMP)
	rm -rf .purchases
	$(BIN)/purchases demo --days 7 --rows 15000

# Test processes: twice the cores, since much of the suite waits on subprocesses (killed runs,
# JVMs, moto's S3 server) rather than computing; each test file stays on one worker.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(2 * (os.cpu_count() or 1))')

# Lint, security and the deployment validators run first, so any finding fails `make test`.
test: $(STAMP) $(NODE_STAMP) lint security validate-deploy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

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
# cfn-lint, checkov, parliament on deploy/template.yaml; asl-validator and statelint on the
# rendered state machine; actionlint on the GitHub workflow.
validate-deploy: $(STAMP) $(NODE_STAMP) $(LINT_STAMP)
	$(BIN)/python .ci/validate-deploy

# Debian's Chromium for the HTML report test (apt; .ci/run calls it, CI requires the browser).
browser:
	.ci/install-browser

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
	rm -rf .purchases build dist node_modules $(LINT_VENV) src/*.egg-info .pytest_cache .ruff_cache bench/out
