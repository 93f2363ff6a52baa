# chat-poc — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO    ?= go

DEVSTACK := bin/devstack
# The test stack: its own state directory, free ports, fresh data every run, so
# it never collides with a `make run` stack on the same machine.
TEST_STACK := -profile geo -dir .devstack-test -ports auto -fresh
GOTEST_FLAGS ?= -race -count=1 -timeout 30m

.PHONY: run test bench bootstrap build vet clean

## run: start the whole geo stack on loopback, print the URLs; Ctrl-C stops everything.
run: bootstrap build
	$(DEVSTACK) up -profile geo

# Packages whose tests stop shared servers (the sync's stop Kafka cluster a):
# they run after all the others, so no other package's tests see the outage.
DISRUPTIVE := github.com/chatpoc/chat-poc/workers/sync

## test: the whole suite against real servers (one shared geo stack for all packages).
test: bootstrap build vet
	DEVSTACK_BIN=$(abspath $(DEVSTACK)) $(DEVSTACK) exec $(TEST_STACK) -- sh -c '\
	  $(GO) test $(GOTEST_FLAGS) $$($(GO) list ./... | grep -vxF "$(DISRUPTIVE)") && \
	  $(GO) test $(GOTEST_FLAGS) $(DISRUPTIVE)'

## bench: benchmarks against a real stack (single profile, its own state); figures go to BENCHMARKS.md.
BENCH_STACK := -profile single -dir .devstack-bench -ports auto -fresh
bench: bootstrap build
	$(DEVSTACK) exec $(BENCH_STACK) -- sh -c '\
	  $(GO) test -run "^$$" -bench WriteToLongPoll -benchtime 300x -count 1 ./apps/external/ && \
	  $(GO) test -run "^$$" -bench LoadgenThroughput -benchtime 5000x -count 1 ./apps/external/'

## bootstrap: install what a fresh machine lacks (idempotent; a second run downloads nothing).
bootstrap:
	deploy/bootstrap.sh

build:
	$(GO) build -o $(DEVSTACK) ./deploy/cmd/devstack

vet:
	$(GO) vet ./...
	cd deploy/temporal && $(GO) vet ./...

## clean: remove local stack state and binaries (caches under ~/.cache/chat-poc stay).
clean:
	rm -rf .devstack .devstack-test .devstack-bench bin
