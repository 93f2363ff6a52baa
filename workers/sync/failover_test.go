package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/workflows"
)

// TestKafkaClusterAStoppedMidStorm stops the shared stack's Kafka cluster a,
// so it runs in make test's serialized phase (see the Makefile).
func TestKafkaClusterAStoppedMidStorm(t *testing.T) {
	e := newSyncEnv(t)
	if _, err := e.stack.Env().Get(devstack.EnvKafkaBBootstrap); err != nil {
		t.Fatalf("this test needs the geo profile's two Kafka clusters: %v", err)
	}
	traces := e.traces()
	e.startWorkers(twoWorkers)

	ctx, stopStorm := context.WithCancel(context.Background())
	defer stopStorm()
	wait := e.storm(ctx, loadgen.Config{Rate: 100, Duration: 10 * time.Minute, Chats: 20})
	e.waitPublishedOn(traces, "a", 50)

	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.stack.Stop(sctx, devstack.KafkaA); err != nil {
		t.Fatalf("stop kafka-a: %v", err)
	}
	stopped := time.Now()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := e.stack.StartComponent(ctx, devstack.KafkaA); err != nil {
				t.Errorf("start kafka-a again: %v", err)
			}
		}
	})
	e.waitPublishedOn(traces, "b", 200)
	t.Logf("kafka-a stopped; changes flowing to b %s later", time.Since(stopped).Round(time.Millisecond))
	stacktest.WaitFor(t, time.Minute, "the status query to name cluster b", func() error {
		qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := e.status(qctx)
		if err != nil || st.Cluster != "b" {
			return fmt.Errorf("cluster %q, %v", st.Cluster, err)
		}
		return nil
	})

	if err := e.stack.StartComponent(sctx, devstack.KafkaA); err != nil {
		t.Fatalf("start kafka-a again: %v", err)
	}
	restarted = true
	began := time.Now()
	stacktest.WaitTransactionsSettled(t, e.stack, "a", stacktest.Env(t, e.stack, devstack.EnvKafkaABootstrap),
		[]string{change.TopicMessages, change.TopicChats}, 3*time.Minute)
	t.Logf("kafka-a back; transactions it had open settled %s after its restart", time.Since(began).Round(time.Millisecond))
	stopStorm()
	acked := wait()
	recs := e.verify(acked, traces)
	var onB int
	for _, r := range recs {
		if r.cluster == "b" {
			onB++
		}
	}
	t.Logf("%d writes: %d records, %d of them on b, %d duplicates, 0 lost", len(acked), len(recs), onB, duplicates(recs))
}

// waitPublishedOn waits until at least n records published by the test's
// own sync workflow run are on the named cluster.
func (e *syncEnv) waitPublishedOn(traces []*trace, cluster string, n int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	desc, err := e.tc.DescribeWorkflowExecution(ctx, workflows.WorkflowID, "")
	if err != nil {
		e.t.Fatal(err)
	}
	run := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	stacktest.WaitFor(e.t, 2*time.Minute, fmt.Sprintf("%d records on cluster %s", n, cluster), func() error {
		got := 0
		for _, tr := range traces {
			tr.mu.Lock()
			for _, r := range tr.recs {
				if r.cluster == cluster && strings.HasPrefix(r.attempt, run+"/") {
					got++
				}
			}
			tr.mu.Unlock()
		}
		if got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

func TestExternalMisbehavingLosesNothingAndDoesNotBusyLoop(t *testing.T) {
	t.Parallel()
	e := newSyncEnv(t)
	traces := e.traces()
	e.startWorkers(oneWorker)

	// Every feed request fails: the worker backs off (100 ms doubling to 5 s)
	// instead of hammering external. A busy loop would make thousands of
	// requests in this window; the backoff makes fewer than ten.
	const window = 5 * time.Second
	// The counter moves once the worker's first long-poll is answered; that
	// it moves also shows the metric is read right.
	stacktest.WaitFor(t, time.Minute, "the first feed request to be counted", func() error {
		if e.feedRequests() == 0 {
			return errors.New("none counted yet")
		}
		return nil
	})
	e.setFaults(`{"errorRate": 1}`)
	before := e.feedRequests()
	time.Sleep(window) // the observation window, not a wait for readiness
	if n := e.feedRequests() - before; n > 25 {
		t.Errorf("%d feed requests in %s while every one failed: not backing off", n, window)
	}
	stacktest.WaitFor(t, time.Minute, "the status query to show the error", func() error {
		qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := e.status(qctx)
		if err != nil {
			return err
		}
		if !strings.Contains(st.LastError, "500") || st.State != workflows.StateRunning {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})

	// Throttled: Retry-After is honoured.
	e.setFaults(`{"throttleRate": 1, "retryAfter": "2s"}`)
	before = e.feedRequests()
	time.Sleep(window)
	if n := e.feedRequests() - before; n > 5 {
		t.Errorf("%d feed requests in %s answered 429 with Retry-After 2s", n, window)
	}

	// Too slow: every answer takes longer than the heartbeat timeout. The
	// attempt gives up on each poll itself and retries, heartbeating, so the
	// server never times it out (which would move the sync from worker to
	// worker for nothing): the attempt running now is a first attempt.
	e.setFaults(`{"latency": "6s"}`)
	stacktest.WaitFor(t, time.Minute, "the status query to show the slow poll", func() error {
		qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := e.status(qctx)
		if err != nil {
			return err
		}
		if !strings.Contains(st.LastError, "deadline") && !strings.Contains(st.LastError, "no complete response") {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if _, attempt := e.waitAttemptAfter(""); !strings.HasSuffix(attempt, "#1") {
		t.Errorf("attempt %s while external is slow: the server timed out an attempt", attempt)
	}

	// Everything at once, under load; then no faults while the sync catches up.
	e.setFaults(`{"latency": "10ms", "latencyJitter": "30ms", "errorRate": 0.1, "throttleRate": 0.05,
		"retryAfter": "1s", "dropRate": 0.05}`)
	acked := e.storm(context.Background(), loadgen.Config{Rate: 80, Duration: 15 * time.Second, Chats: 10})()
	e.setFaults(`{}`)
	recs := e.verify(acked, traces)
	t.Logf("%d writes acknowledged under faults, %d records, %d duplicates, 0 lost", len(acked), len(recs), duplicates(recs))
}

// feedRequests reads how many /api/changes requests the test's external
// service has answered, from its Prometheus metrics.
func (e *syncEnv) feedRequests() int {
	e.t.Helper()
	total := 0
	for _, m := range scrapeMetrics(e.t, e.external+"/metrics")["external_http_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" && l.GetValue() == "/api/changes" {
				total += int(m.GetCounter().GetValue())
			}
		}
	}
	return total
}

// TestStackSyncPublishesExternalChanges checks the stack's own deployment:
// the singleton runs on the stack's sync workers and a chat created on the
// stack's external service is published.
func TestStackSyncPublishesExternalChanges(t *testing.T) {
	t.Parallel()
	stack := stacktest.Connect(t)
	traces := (&syncEnv{t: t, stack: stack}).traces()
	tc := stacktest.TemporalClient(t, stack)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	chatID := stacktest.CreateChat(t, stacktest.Env(t, stack, devstack.EnvExternalURL))
	stacktest.WaitFor(t, time.Minute, "chat "+chatID+" in Kafka", func() error {
		recs, err := records(map[string]bool{chatID: true}, traces...)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	// The status's totals move when an activity execution reports (every
	// workflows.DefaultReportInterval), not with each publish.
	stacktest.WaitFor(t, time.Minute, "the stack sync's status to count the change", func() error {
		st, err := stacktest.SyncStatus(ctx, tc)
		if err != nil {
			return fmt.Errorf("query the stack's sync: %w", err)
		}
		if st.State != workflows.StateRunning || !strings.HasPrefix(st.Worker, "sync-") || st.Totals.Changes == 0 {
			return fmt.Errorf("status %+v, want running on one of the stack's sync workers, with changes", st)
		}
		return nil
	})
}
