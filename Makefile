# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean lambda-package chromium java

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,spark,iceberg]'
	@touch $(STAMP)

# Generates a month, loads it, prints the report, then serves the dashboard (Ctrl-C stops it).
demo: $(STAMP)
	$(VENV)/bin/cafe-etl demo

# Two workers, each taking whole test modules (a module's fixtures are built once).
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) bench/ingest_month.py

# The AWS Lambda function's zip (deploy/aws/template.yaml): build/lambda.zip
lambda-package: $(STAMP)
	$(PY) deploy/aws/package.py --out build/lambda.zip

# Chromium for the browser tests (Debian packages chromium, chromium-driver), when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }; }
	@chromium --version

# Java for Spark (`ingest --executor spark` and its tests): Debian's openjdk-17-jre-headless, when missing.
java:
	@command -v java >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q openjdk-17-jre-headless >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q openjdk-17-jre-headless >/dev/null; }; }
	@java -version 2>&1 | head -1

lint: $(STAMP)
	$(PY) -m ruff check src tests bench deploy

clean:
	rm -rf $(VENV) data bench/out build .pytest_cache
