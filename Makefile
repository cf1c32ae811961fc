# Everything runs inside .venv, created on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv protos check-protos lint browser test run soak soak-hostile bench clean

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

# What `buf breaking` compares the protos with: main's last commit, so every
# change stays wire-compatible (new fields only). The git common dir, not
# ".git": in a git worktree .git is a file buf cannot read; in a clone it is
# ".git" itself. Where no local main branch exists (a detached CI checkout),
# name another: make lint BUF_AGAINST='.git#ref=origin/main'.
BUF_AGAINST ?= $(shell git rev-parse --git-common-dir)\#branch=main

## lint: ruff, mypy, the layer contracts (import-linter), buf lint, buf format
## and buf breaking against main
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/buf lint
	$(VENV)/bin/buf format --exit-code > /dev/null
	$(VENV)/bin/buf breaking --against '$(BUF_AGAINST)'

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

## test: lint, stub drift check, the browser, then the test suite
test: lint check-protos browser
	$(VENV)/bin/pytest

## run: the whole demo stack (registry, LLMService, example plugins) and a scripted conversation
run: $(STAMP)
	$(VENV)/bin/toolcall demo

soak: $(STAMP)
	$(VENV)/bin/python -m tests.soak

soak-hostile: $(STAMP)
	$(VENV)/bin/python -m tests.soak --hostile

bench: $(STAMP)
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
