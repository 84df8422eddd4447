# Two commands matter (see README): `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test setup system-deps kafka-libs asyncapi-validator bench clean

$(BIN)/streamproc: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: system-deps $(BIN)/streamproc

system-deps:
	@./scripts/install-system-deps.sh

demo: setup
	$(BIN)/streamproc demo

# Apache Kafka 3.9 jars for the Kafka-parametrised tests (tests/kafka/pom.xml, docs/broker.md):
# fetched once from Maven Central (~9 s cold, 46 MB), skipped when present.
KAFKA_JAR := tests/kafka/libs/kafka_2.13-3.9.1.jar

$(KAFKA_JAR): tests/kafka/pom.xml
	rm -rf tests/kafka/libs
	mvn -B -q -f tests/kafka/pom.xml dependency:copy-dependencies
	@touch $@

kafka-libs: system-deps $(KAFKA_JAR)

# The reference AsyncAPI parser (npm @asyncapi/parser, pinned by tests/asyncapi/package-lock.json) that
# tests/unit/test_asyncapi.py runs on docs/asyncapi.yaml. --ignore-scripts: nothing it needs runs an
# install script, and one dependency's would phone home.
ASYNCAPI_VALIDATOR := tests/asyncapi/node_modules/.package-lock.json

$(ASYNCAPI_VALIDATOR): tests/asyncapi/package-lock.json
	cd tests/asyncapi && SCARF_ANALYTICS=false npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

asyncapi-validator: system-deps $(ASYNCAPI_VALIDATOR)

test: setup kafka-libs asyncapi-validator
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) tests/kafka/libs tests/asyncapi/node_modules streamproc-data test-artifacts .pytest_cache .hypothesis
