# Everything runs inside .venv, created on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv protos check-protos lint browser test engines run soak soak-hostile fault-drill bench clean generators plugin-deps \
	example-plugins java-plugin bench-go-load

# Generators of the Go and TypeScript stubs (buf.gen.yaml), pinned. The Go ones
# are built into .cache/bin by `go install` (Go's module and build caches make
# a second install take a second); ts-proto is pinned by
# examples/ts_plugin/package-lock.json. A stamp per version: changing a
# version here installs the new one.
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GOBIN_DIR := .cache/bin
GO_GENERATORS := $(GOBIN_DIR)/.protoc-gen-go@$(PROTOC_GEN_GO_VERSION) \
	$(GOBIN_DIR)/.protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
TS_MODULES := examples/ts_plugin/node_modules/.package-lock.json
# Everything generated from protos/, checked by check-protos.
GENERATED := toolcall/v1 examples/go_plugin/gen examples/ts_plugin/src/gen

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(GOBIN_DIR)/.protoc-gen-go@$(PROTOC_GEN_GO_VERSION):
	GOBIN=$(abspath $(GOBIN_DIR)) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	touch $@

$(GOBIN_DIR)/.protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION):
	GOBIN=$(abspath $(GOBIN_DIR)) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	touch $@

# npm ci only when the lock file changed (npm's cache in ~/.npm keeps it fast).
$(TS_MODULES): examples/ts_plugin/package-lock.json
	cd examples/ts_plugin && npm ci --no-audit --no-fund --prefer-offline
	touch $@

## generators: the pinned Go and TypeScript stub generators
generators: $(GO_GENERATORS) $(TS_MODULES)

## plugin-deps: what the Go and TypeScript plugins build with (Go modules, npm packages)
plugin-deps: $(TS_MODULES)
	cd examples/go_plugin && go mod download

## example-plugins: build the Go and TypeScript example plugins (bench B-go, B-ts run them)
example-plugins: plugin-deps
	cd examples/go_plugin && go vet ./... && go build -o ../../.cache/examples/go_plugin .
	cd examples/ts_plugin && npm run --silent build

## bench-go-load: build bench S3's Go load generator (bench/go_load; python -m bench.storage --client go)
bench-go-load:
	cd bench/go_load && go vet ./... && go build -o ../../.cache/bench/go_load .

## protos: regenerate Python stubs (+ mypy-protobuf type stubs) from protos/,
## toolcall/v1/descriptors.binpb: the protos with their comments, for server reflection,
## and the Go and TypeScript stubs of the example plugins (buf.gen.yaml)
protos: $(STAMP) generators
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. \
		--mypy_out=quiet:. --mypy_grpc_out=quiet:. protos/toolcall/v1/*.proto
	$(PY) -m grpc_tools.protoc -Iprotos --include_source_info \
		--descriptor_set_out=toolcall/v1/descriptors.binpb protos/toolcall/v1/*.proto
	rm -rf examples/go_plugin/gen examples/ts_plugin/src/gen
	$(VENV)/bin/buf generate

## check-protos: fail when the committed stubs (Python, Go, TypeScript) differ from what
## the protos generate, including generated files not committed yet
check-protos: protos
	@new="$$(git ls-files --others --exclude-standard -- $(GENERATED))"; \
	if ! git diff --exit-code --stat -- $(GENERATED) || [ -n "$$new" ]; then \
		test -z "$$new" || echo "generated but not committed: $$new" >&2; \
		echo "generated stubs drift from protos/: run 'make protos' and commit" >&2; exit 1; fi

# What `buf breaking` compares the protos with: main's last commit, so every
# change stays wire-compatible (new fields only). The git common dir, not
# ".git": in a git worktree .git is a file buf cannot read; in a clone it is
# ".git" itself. Where no local main branch exists (a detached CI checkout),
# name another: make lint BUF_AGAINST='.git#ref=origin/main'.
BUF_AGAINST ?= $(shell git rev-parse --git-common-dir)\#branch=main

## lint: ruff, mypy, the layer contracts (import-linter), buf lint, buf format,
## buf breaking against main, and gofmt
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/buf lint
	$(VENV)/bin/buf format --exit-code > /dev/null
	$(VENV)/bin/buf breaking --against '$(BUF_AGAINST)'
	@test -z "$$(gofmt -l examples/go_plugin bench/go_load)" || (gofmt -l examples/go_plugin bench/go_load; echo "run gofmt -w examples/go_plugin bench/go_load" >&2; exit 1)

## browser: Debian's chromium and chromium-driver, which the web console's tests
## drive (tests/test_console_browser.py). Installed with apt-get when missing and
## running as root (CI); otherwise this says how, and those tests fail saying so.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else \
		echo "make browser: chromium/chromedriver missing; install them (Debian: sudo apt-get install chromium chromium-driver)" >&2; \
	fi

## java-plugin: build examples/java_plugin (Maven generates its stubs from protos/); offline
## first, so a warm ~/.m2 needs no network. Without mvn its test is skipped.
JAVA_PLUGIN_JAR := examples/java_plugin/target/toolcall-java-plugin.jar
$(JAVA_PLUGIN_JAR): examples/java_plugin/pom.xml $(shell find examples/java_plugin/src -name '*.java') $(wildcard protos/toolcall/v1/*.proto)
	@command -v mvn >/dev/null || { echo "mvn not found: not building the Java plugin" >&2; exit 0; }
	cd examples/java_plugin && (mvn -q -B -o package >/dev/null 2>&1 || mvn -q -B package)

java-plugin: $(JAVA_PLUGIN_JAR)

## engines: the etcd and PostgreSQL servers the storage tests start (tests/support/etcd.py,
## tests/support/postgres.py): apt-installs Debian's etcd-server and postgresql when missing
## and running as root; otherwise says what is missing (those tests then fail saying so)
engines:
	@missing=""; \
	command -v etcd >/dev/null 2>&1 || test -x /usr/bin/etcd || missing="$$missing etcd-server"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 \
		|| missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing$$missing"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
		else echo "missing:$$missing (install them, or run make test as root)" >&2; fi; \
	fi

# The registry and LLMService suites again on the other backends (etcd, PostgreSQL).
STORAGE_SUITE := tests/test_registry_*.py tests/test_fuzz_registry.py tests/test_plugin_heartbeat.py \
	tests/test_llm_history.py tests/test_llm_tasks.py tests/test_llm_service.py \
	tests/test_llm_limits.py tests/test_llm_offline.py tests/test_llm_e2e.py tests/test_long_jobs.py

## test: lint, stub drift check, the browser and the example plugins' builds (their tests
## then find Go's and npm's caches warm), the etcd and PostgreSQL servers, the test suite,
## then the registry and LLMService suites again on etcd and PostgreSQL
test: lint check-protos browser example-plugins java-plugin engines
	$(VENV)/bin/pytest
	$(VENV)/bin/pytest -q --registry-store=etcd --llm-store=postgres $(STORAGE_SUITE)

## run: the whole demo stack (registry, LLMService, example plugins) and a scripted conversation
run: $(STAMP)
	$(VENV)/bin/toolcall demo

soak: $(STAMP)
	$(VENV)/bin/python -m tests.soak

soak-hostile: $(STAMP)
	$(VENV)/bin/python -m tests.soak --hostile

## fault-drill: issue 18's faults (etcd, registry, LLMService, PostgreSQL) under load on replicas
fault-drill: $(STAMP) engines
	$(VENV)/bin/python -m tests.fault_drill

bench: $(STAMP) engines example-plugins java-plugin bench-go-load
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python -m bench
	$(VENV)/bin/python -m bench.storage

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .cache examples/ts_plugin/node_modules examples/ts_plugin/dist \
		examples/java_plugin/target
