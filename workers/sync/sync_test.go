package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/workflows"
)

// traces starts a trace of each of the stack's Kafka clusters.
func (e *syncEnv) traces() []*trace {
	e.t.Helper()
	trs := []*trace{startTrace(e.t, "a", stacktest.Env(e.t, e.stack, devstack.EnvKafkaABootstrap))}
	if b, err := e.stack.Env().Get(devstack.EnvKafkaBBootstrap); err == nil {
		trs = append(trs, startTrace(e.t, "b", b))
	}
	return trs
}

// verify waits until every acknowledged write is in Kafka and checks the
// per-chat order; it returns the records of the writes' chats.
func (e *syncEnv) verify(acked []loadgen.Record, traces []*trace) []published {
	e.t.Helper()
	recs := waitDelivered(e.t, acked, 2*time.Minute, traces...)
	if v := orderViolations(recs); len(v) > 0 {
		e.t.Errorf("%d order violations, e.g.:\n%s", len(v), strings.Join(v[:min(10, len(v))], "\n"))
	}
	return recs
}

func TestFiveWorkersStartingAtOnceRunOneExecution(t *testing.T) {
	t.Parallel()
	e := newSyncEnv(t)
	names := []string{"w1", "w2", "w3", "w4", "w5"}
	for _, n := range names {
		e.startWorker(n, "a")
	}
	// Every worker has ensured the singleton once it logged the run it found
	// or started.
	runs := map[string]string{}
	stacktest.WaitFor(t, time.Minute, "every worker to ensure the singleton", func() error {
		for _, n := range names {
			log, err := e.logOf(n)
			if err != nil {
				return err
			}
			for _, line := range strings.Split(log, "\n") {
				var l struct{ Msg, RunID string }
				if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "sync workflow running" {
					runs[n] = l.RunID
					break
				}
			}
			if runs[n] == "" {
				return fmt.Errorf("%s has not yet", n)
			}
		}
		return nil
	})
	for _, n := range names[1:] {
		if runs[n] != runs[names[0]] {
			t.Errorf("workers ensured different runs: %v", runs)
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stacktest.WaitFor(t, 30*time.Second, "visibility to list the sync workflow", func() error {
		resp, err := e.tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: e.ns, Query: fmt.Sprintf("WorkflowId = %q", workflows.WorkflowID),
		})
		if err != nil {
			return err
		}
		var running int
		for _, ex := range resp.GetExecutions() {
			if ex.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				running++
			}
		}
		if len(resp.GetExecutions()) == 0 {
			return errors.New("no execution listed yet")
		}
		if running != 1 || len(resp.GetExecutions()) != 1 {
			t.Fatalf("%d executions, %d running; want exactly one", len(resp.GetExecutions()), running)
		}
		return nil
	})
	desc, err := e.tc.DescribeWorkflowExecution(ctx, workflows.WorkflowID, "")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(desc.GetPendingActivities()); n > 1 {
		t.Errorf("%d pending activities, want at most one", n)
	}
}

func TestKillStormLosesNothing(t *testing.T) {
	e := newSyncEnv(t)
	traces := e.traces()
	e.startWorkers(threeWorkers)

	ctx, stopStorm := context.WithCancel(context.Background())
	defer stopStorm()
	wait := e.storm(ctx, loadgen.Config{Rate: 150, Duration: 10 * time.Minute, Chats: 30, Concurrency: 8})

	const kills = 20
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
	var killed []string
	var last string
	for i := range kills {
		victim, attempt, _ := e.killActive(last, rng, threeWorkers)
		killed = append(killed, victim)
		last = attempt
		t.Logf("kill %d/%d: %s in attempt %s", i+1, kills, victim, attempt)
	}
	e.waitAttemptAfter(last)
	stopStorm()
	acked := wait()

	recs := e.verify(acked, traces)
	dups := duplicates(recs)
	t.Logf("%d acknowledged writes, %d records in Kafka, 0 lost, %d duplicates over %d kills (%.1f per failover); killed %v",
		len(acked), len(recs), dups, kills, float64(dups)/kills, killed)
}

func TestFrozenWorkerIsFencedWhenItResumes(t *testing.T) {
	e := newSyncEnv(t)
	traces := e.traces()
	e.startWorkers(twoWorkers)

	ctx, stopStorm := context.WithCancel(context.Background())
	defer stopStorm()
	wait := e.storm(ctx, loadgen.Config{Rate: 100, Duration: 10 * time.Minute, Chats: 10})

	// Freeze the holder of an attempt that is publishing, in mid-attempt.
	var frozen, stale string
	for try := 0; ; try++ {
		if try == 10 {
			t.Fatal("could not freeze a worker in the middle of a publishing attempt")
		}
		stacktest.WaitFor(t, time.Minute, "an attempt that has published", func() error {
			qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var err error
			if frozen, stale, err = e.activeAttempt(qctx); err != nil {
				return err
			}
			if len(attemptRecords(traces, stale)) == 0 {
				return errors.New("attempt " + stale + " has not published yet")
			}
			return nil
		})
		e.signal(frozen, syscall.SIGSTOP)
		qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, still, err := e.activeAttempt(qctx)
		cancel()
		if err == nil && still == stale {
			break
		}
		e.signal(frozen, syscall.SIGCONT) // the attempt ended just before the freeze; again
	}
	frozenAt := time.Now()
	other := map[string]string{"w1": "w2", "w2": "w1"}[frozen]

	var fresh string
	stacktest.WaitFor(t, time.Minute, other+" to take over and publish", func() error {
		qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		who, attempt, err := e.activeAttempt(qctx)
		if err != nil || who != other {
			return fmt.Errorf("active: %q, %v", who, err)
		}
		if len(attemptRecords(traces, attempt)) == 0 {
			return errors.New("the new attempt has not published yet")
		}
		fresh = attempt
		return nil
	})
	t.Logf("%s frozen in attempt %s; %s took over with attempt %s and published, %s later",
		frozen, stale, other, fresh, time.Since(frozenAt).Round(time.Millisecond))

	e.signal(frozen, syscall.SIGCONT)
	// The zombie learns it lost the activity (its heartbeat is rejected or its
	// producer is fenced) and ends the stale attempt.
	var ended string
	stacktest.WaitFor(t, time.Minute, frozen+" to end its stale attempt", func() error {
		log, err := e.logOf(frozen)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(log, "\n") {
			var l struct{ Msg, Reason string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "sync attempt ended" {
				ended = l.Reason
				return nil
			}
		}
		return errors.New("not yet")
	})
	t.Logf("the zombie's attempt ended: %s", ended)
	stopStorm()
	acked := wait()
	recs := e.verify(acked, traces)

	// Nothing of the stale attempt may follow the new attempt's first record
	// in any partition: that would be the zombie publishing after takeover.
	first := map[string]int64{}
	for _, r := range attemptRecords(traces, fresh) {
		k := r.cluster + "/" + r.topic + "/" + fmt.Sprint(r.partition)
		if o, ok := first[k]; !ok || r.offset < o {
			first[k] = r.offset
		}
	}
	var late int
	for _, r := range attemptRecords(traces, stale) {
		if o, ok := first[r.cluster+"/"+r.topic+"/"+fmt.Sprint(r.partition)]; ok && r.offset > o {
			late++
		}
	}
	if late > 0 {
		t.Errorf("the zombie attempt %s published %d records after %s took over", stale, late, fresh)
	}
	t.Logf("%d writes, %d records, %d duplicates; the zombie published nothing after the takeover",
		len(acked), len(recs), duplicates(recs))
}

// attemptRecords returns the records published by one activity attempt.
func attemptRecords(traces []*trace, attempt string) []published {
	var out []published
	for _, tr := range traces {
		tr.mu.Lock()
		for _, r := range tr.recs {
			if r.attempt == attempt {
				out = append(out, r)
			}
		}
		tr.mu.Unlock()
	}
	return out
}

func TestSIGTERMHandsTheSyncOverWithoutATimeout(t *testing.T) {
	t.Parallel()
	e := newSyncEnv(t)
	e.startWorkers(twoWorkers)
	who, attempt := e.waitAttemptAfter("")
	e.signal(who, syscall.SIGTERM)
	code, err := e.worker(who).Wait(time.Minute)
	if err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	if code != 0 {
		t.Errorf("%s exited with %d after SIGTERM, want 0", who, code)
	}
	next, nextAttempt := e.waitAttemptAfter(attempt)
	t.Logf("%s ran attempt %s at SIGTERM; then %s ran %s", who, attempt, next, nextAttempt)
	if next == who {
		t.Errorf("%s runs the sync again after it exited", who)
	}
	// A handover completes the running execution in the attempt that ran at
	// SIGTERM; a heartbeat timeout would have retried it (attempt 2).
	scheduled, err := strconv.ParseInt(attempt[strings.IndexByte(attempt, '/')+1:strings.IndexByte(attempt, '#')], 10, 64)
	if err != nil {
		t.Fatalf("attempt %q: %v", attempt, err)
	}
	var startedAttempt int32
	completed := false
	it := e.tc.GetWorkflowHistory(context.Background(), workflows.WorkflowID, "", false, 0)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if a := ev.GetActivityTaskStartedEventAttributes(); a != nil && a.GetScheduledEventId() == scheduled {
			startedAttempt = a.GetAttempt()
		}
		if a := ev.GetActivityTaskCompletedEventAttributes(); a != nil && a.GetScheduledEventId() == scheduled {
			completed = true
		}
	}
	if !completed || startedAttempt != 1 {
		t.Errorf("the execution running at SIGTERM: completed %v, last attempt %d; want completed by its first attempt",
			completed, startedAttempt)
	}
	log, err := e.logOf(who)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "handing the sync over") {
		t.Errorf("%s's log does not show the handover", who)
	}
}

func TestTerminatedSingletonRestartsFromItsCheckpoint(t *testing.T) {
	t.Parallel()
	e := newSyncEnv(t)
	e.startWorkers(oneWorker)
	acked := e.storm(context.Background(), loadgen.Config{Rate: 50, MaxOps: 50, Chats: 3})()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var before workflows.Status
	stacktest.WaitFor(t, time.Minute, "the status to show the storm's changes", func() error {
		var err error
		if before, err = e.status(ctx); err != nil {
			return err
		}
		if before.Totals.Changes < int64(len(acked)) {
			return fmt.Errorf("%d changes so far", before.Totals.Changes)
		}
		return nil
	})
	desc, err := e.tc.DescribeWorkflowExecution(ctx, workflows.WorkflowID, "")
	if err != nil {
		t.Fatal(err)
	}
	oldRun := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	if err := e.tc.TerminateWorkflow(ctx, workflows.WorkflowID, oldRun, "operator mistake"); err != nil {
		t.Fatal(err)
	}
	// A worker that starts now finds the closed run and starts a new one
	// from the closed run's checkpoint, not from the start of the feed.
	e.startWorker("w2", "a")
	var in workflows.SyncInput
	stacktest.WaitFor(t, time.Minute, "a new run of the singleton", func() error {
		desc, err := e.tc.DescribeWorkflowExecution(ctx, workflows.WorkflowID, "")
		if err != nil {
			return err
		}
		run := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
		if run == oldRun {
			return errors.New("still the terminated run")
		}
		it := e.tc.GetWorkflowHistory(ctx, workflows.WorkflowID, run, false, 0)
		ev, err := it.Next()
		if err != nil {
			return err
		}
		return converter.GetDefaultDataConverter().FromPayloads(
			ev.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in)
	})
	if in.Cursor == "" || in.Totals.Changes < before.Totals.Changes {
		t.Errorf("new run started with %+v; want the terminated run's cursor and totals (%+v)", in, before)
	}
}
