# chat-poc — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO    ?= go

DEVSTACK := bin/devstack
# The test stack: its own state directory, free ports, fresh data every run, so
# it never collides with a `make run` stack on the same machine.
TEST_STACK := -profile geo -dir .devstack-test -ports auto -fresh
GOTEST_FLAGS ?= -race -count=1 -timeout 30m

.PHONY: run test chaos bench soak bootstrap build vet clean

## run: start the whole geo stack on loopback, print the URLs; Ctrl-C stops everything.
run: bootstrap build
	$(DEVSTACK) up -profile geo

# Packages whose tests disrupt shared servers run after all the others, one at
# a time, in this order: the sync's stop Kafka cluster a (and restart it); the
# end-to-end tests and chaos scenarios kill and restart the stack's own
# components; the Postgres failover kills the primary for good (the standby
# is the primary after).
DISRUPTIVE := github.com/chatpoc/chat-poc/workers/sync github.com/chatpoc/chat-poc/e2e github.com/chatpoc/chat-poc/workers/writer/pgfailover

## test: the whole suite against real servers (one shared geo stack for all packages).
test: bootstrap build vet
	DEVSTACK_BIN=$(abspath $(DEVSTACK)) $(DEVSTACK) exec $(TEST_STACK) -- sh -c '\
	  $(GO) test $(GOTEST_FLAGS) $$($(GO) list ./... | grep -vxF $(addprefix -e ,$(DISRUPTIVE))) && \
	  for p in $(DISRUPTIVE); do $(GO) test $(GOTEST_FLAGS) $$p || exit 1; done'

## chaos: the long chaos scenarios (e2e/chaos_test.go: 20 kills of the active sync worker, …) on a fresh geo stack.
CHAOS_STACK := -profile geo -dir .devstack-chaos -ports auto -fresh
chaos: bootstrap build
	DEVSTACK_BIN=$(abspath $(DEVSTACK)) $(DEVSTACK) exec $(CHAOS_STACK) -- \
	  $(GO) test -count=1 -timeout 90m -v -run 'Chaos' ./e2e/ -args -chaos.long

## bench: benchmarks against a real geo stack (its own state, free ports); rewrites the tables in BENCHMARKS.md.
BENCH_STACK := -profile geo -dir .devstack-bench -ports auto -fresh
BENCH := $(GO) test -run "^$$" -count 1 -timeout 30m
bench: bootstrap build
	$(DEVSTACK) exec $(BENCH_STACK) -- bash -c 'set -eo pipefail; \
	  $(BENCH) -bench IdleRSS -benchtime 2x ./e2e/ | $(GO) run ./deploy/cmd/benchmd -section rss; \
	  { $(BENCH) -bench WriteToLongPoll -benchtime 300x ./apps/external/ && \
	    $(BENCH) -bench LoadgenThroughput -benchtime 5000x ./apps/external/; } \
	    | $(GO) run ./deploy/cmd/benchmd -section external; \
	  { $(BENCH) -bench SyncFailoverGap -benchtime 20x ./workers/sync/ && \
	    $(BENCH) -bench SyncLatency -benchtime 6000x ./workers/sync/ && \
	    $(BENCH) -bench SyncThroughput -benchtime 20000x ./workers/sync/; } \
	    | $(GO) run ./deploy/cmd/benchmd -section sync; \
	  { $(BENCH) -bench WriterThroughput -benchtime 20000x ./workers/writer/ && \
	    $(BENCH) -bench WriterLatency -benchtime 6000x ./workers/writer/; } \
	    | $(GO) run ./deploy/cmd/benchmd -section writer; \
	  { $(BENCH) -bench InternalFanout -benchtime 6000x ./apps/internal/ && \
	    $(BENCH) -bench InternalOpenChat -benchtime 200x ./apps/internal/ && \
	    $(BENCH) -bench CacheCAS -benchtime 200000x ./apps/internal/; } \
	    | $(GO) run ./deploy/cmd/benchmd -section internal; \
	  { $(BENCH) -bench LegacySyncKillStorm -benchtime 20x ./bench/legacysync/ && \
	    $(BENCH) -bench LegacySyncLatency -benchtime 6000x ./bench/legacysync/; } \
	    | $(GO) run ./deploy/cmd/benchmd -section baseline; \
	  { $(BENCH) -bench EndToEndLatency -benchtime 3000x ./e2e/ && \
	    $(BENCH) -bench MirrorMakerLag -benchtime 6000x ./e2e/ && \
	    $(BENCH) -bench SustainedThroughput -benchtime 300x ./e2e/; } \
	    | $(GO) run ./deploy/cmd/benchmd -section e2e'

## soak: an hour at 200 writes/s on a fresh geo stack (deploy/cmd/soak): every service's RSS and
## Redis's used_memory sampled each minute must stay flat; writes soak.csv and soak.svg beside
## BENCHMARKS.md and its table into BENCHMARKS.md. Not part of `make test`.
SOAK_STACK := -profile geo -dir .devstack-soak -ports auto -fresh
SOAK_FLAGS ?= -duration 1h -rate 200 -every 1m
soak: bootstrap build
	$(DEVSTACK) exec $(SOAK_STACK) -- bash -c 'set -o pipefail; \
	  $(GO) run ./deploy/cmd/soak $(SOAK_FLAGS) -out . | $(GO) run ./deploy/cmd/benchmd -section soak -command "make soak"'

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
	rm -rf .devstack .devstack-test .devstack-bench .devstack-chaos .devstack-soak bin
