# skiff's build. `make up` runs skiff on this machine; `make test` runs every
# test. Both first install what is missing (scripts/install-deps.sh).

export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin/skiff
# The per-container shim, found by the agent next to skiff (cmd/skiff-shim).
SHIM := bin/skiff-shim
DATA ?= /var/lib/skiff
LISTEN ?= 127.0.0.1:7443
TEST_TIMEOUT ?= 25m
NODES ?= 3

.PHONY: all deps build install up cluster test test-short bench vet fmt clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(GO) build -o $(BIN) ./cmd/skiff
	$(GO) build -o $(SHIM) ./cmd/skiff-shim

# Put skiff on PATH when we may (root), so a second terminal can use it;
# skiff-shim goes next to it, where the agent looks for it.
install: build
	@if [ -w /usr/local/bin ]; then install -m 0755 $(BIN) $(SHIM) /usr/local/bin/; \
	else echo "note: /usr/local/bin is not writable; use $(CURDIR)/$(BIN)"; fi

up: install
	$(BIN) up --data $(DATA) --listen $(LISTEN)

# A multi-node cluster on this machine, one network namespace per node
# (see lab/doc.go); Ctrl-C removes everything it made.
cluster: build
	$(BIN) dev cluster --nodes $(NODES)

vet: deps
	$(GO) vet ./...

# SKIFF_VERIFY_SHARED=1: the servers the tests start check, as test
# binaries do, that no decoded object the store shares is modified in
# place (store/shared.go).
test: deps vet
	SKIFF_VERIFY_SHARED=1 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

test-short: deps
	$(GO) test -short -count=1 ./...

bench: build
	$(BIN) bench store

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
