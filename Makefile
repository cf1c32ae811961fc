# Everything runs inside .venv, created on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv protos check-protos lint test java-plugin run soak soak-hostile bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## protos: regenerate Python stubs (+ mypy-protobuf type stubs) from protos/, and
## toolcall/v1/descriptors.binpb: the protos with their comments, for server reflection
protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. \
		--mypy_out=quiet:. --mypy_grpc_out=quiet:. protos/toolcall/v1/*.proto
	$(PY) -m grpc_tools.protoc -Iprotos --include_source_info \
		--descriptor_set_out=toolcall/v1/descriptors.binpb protos/toolcall/v1/*.proto

## check-protos: fail when the committed stubs differ from what the protos generate
check-protos: protos
	git diff --exit-code -- toolcall/v1 || (echo "generated stubs drift from protos/: run 'make protos' and commit" >&2; exit 1)

## lint: ruff, mypy, the layer contracts (import-linter), buf lint and buf format
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/buf lint
	$(VENV)/bin/buf format --exit-code > /dev/null

## java-plugin: build examples/java_plugin (Maven generates its stubs from protos/); offline
## first, so a warm ~/.m2 needs no network. Without mvn its test is skipped.
JAVA_PLUGIN_JAR := examples/java_plugin/target/toolcall-java-plugin.jar
$(JAVA_PLUGIN_JAR): examples/java_plugin/pom.xml $(shell find examples/java_plugin/src -name '*.java') $(wildcard protos/toolcall/v1/*.proto)
	@command -v mvn >/dev/null || { echo "mvn not found: not building the Java plugin" >&2; exit 0; }
	cd examples/java_plugin && (mvn -q -B -o package >/dev/null 2>&1 || mvn -q -B package)

java-plugin: $(JAVA_PLUGIN_JAR)

## test: lint, stub drift check, the example plugins' builds, then the test suite
test: lint check-protos java-plugin
	$(VENV)/bin/pytest

## run: the whole demo stack (registry, LLMService, example plugins) and a scripted conversation
run: $(STAMP)
	$(VENV)/bin/toolcall demo

soak: $(STAMP)
	$(VENV)/bin/python -m tests.soak

soak-hostile: $(STAMP)
	$(VENV)/bin/python -m tests.soak --hostile

bench: $(STAMP) java-plugin
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache examples/java_plugin/target
