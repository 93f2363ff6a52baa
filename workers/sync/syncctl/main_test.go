package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/chatpoc/chat-poc/activities"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/workflows"
)

// stubFeed stands in for the poll activity (the command talks to Temporal
// only): each execution heartbeats until its report interval ends, then
// reports its cursor with one more "+" and the execution's count.
type stubFeed struct {
	executions atomic.Int64
	cursors    chan string // each execution's starting cursor
}

func (f *stubFeed) Sync(ctx context.Context, p activities.SyncParams) (activities.Progress, error) {
	f.executions.Add(1)
	select {
	case f.cursors <- p.Cursor:
	default:
	}
	t := time.NewTimer(p.ReportAfter)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return activities.Progress{}, ctx.Err()
	case <-t.C:
	}
	activity.RecordHeartbeat(ctx, p.Cursor)
	return activities.Progress{Cursor: p.Cursor + "+", Polls: 1, Changes: 2, Worker: "stub", Cluster: "a", LastPoll: time.Now()}, nil
}

// syncctlEnv runs the sync workflow in a namespace of its own on the shared
// stack's Temporal, its activity stubbed, and runs syncctl against it.
type syncctlEnv struct {
	t    *testing.T
	addr string
	ns   string
	feed *stubFeed
}

func newSyncctlEnv(t *testing.T) *syncctlEnv {
	t.Helper()
	stack := stacktest.Connect(t)
	ns, tc := stacktest.FreshNamespace(t, stack)
	e := &syncctlEnv{t: t, addr: stacktest.Env(t, stack, devstack.EnvTemporalAddress), ns: ns, feed: &stubFeed{cursors: make(chan string, 1000)}}
	w := worker.New(tc, workflows.TaskQueue, worker.Options{})
	w.RegisterWorkflow(workflows.Sync)
	w.RegisterActivityWithOptions(e.feed.Sync, activity.RegisterOptions{Name: "Sync"})
	if err := w.Start(); err != nil {
		t.Fatalf("start the worker: %v", err)
	}
	t.Cleanup(w.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.WorkflowID, TaskQueue: workflows.TaskQueue}, workflows.Sync,
		workflows.SyncInput{Cursor: "c0", Options: workflows.Options{ReportInterval: 200 * time.Millisecond}})
	if err != nil {
		t.Fatalf("start the sync workflow: %v", err)
	}
	t.Cleanup(func() {
		_ = tc.TerminateWorkflow(context.Background(), workflows.WorkflowID, "", "test ended")
	})
	return e
}

// syncctl runs the command with args against the env's namespace, the
// address and namespace given by the environment as an operator would.
func (e *syncctlEnv) syncctl(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	env := map[string]string{"TEMPORAL_ADDRESS": e.addr, "TEMPORAL_NAMESPACE": e.ns}
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func (e *syncctlEnv) mustRun(args ...string) string {
	e.t.Helper()
	code, out, errOut := e.syncctl(args...)
	if code != exitOK {
		e.t.Fatalf("syncctl %s: exit %d, stderr: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func (e *syncctlEnv) status() Report {
	e.t.Helper()
	var r Report
	if err := json.Unmarshal([]byte(e.mustRun("status", "-json")), &r); err != nil {
		e.t.Fatalf("status -json: %v", err)
	}
	return r
}

// The operator command against a real Temporal server and the real sync
// workflow: status reads the workflow and its namespace, pause returns
// once nothing polls, resume polls again, resync moves the cursor, and
// failover refuses a local namespace.
func TestSyncctlOperatesTheSyncWorkflow(t *testing.T) {
	t.Parallel()
	e := newSyncctlEnv(t)

	stacktest.WaitFor(t, 30*time.Second, "the sync to report a poll", func() error {
		if r := e.status(); r.Sync.Totals.Polls == 0 {
			return fmt.Errorf("status %+v", r.Sync)
		}
		return nil
	})
	r := e.status()
	if r.Sync.State != workflows.StateRunning || r.Execution != "Running" || r.Sync.Worker != "stub" || !strings.HasPrefix(r.Sync.Cursor, "c0+") {
		t.Errorf("status = %+v, execution %s; want running, Running, worker stub, cursor c0+…", r.Sync, r.Execution)
	}
	if r.Namespace.Name != e.ns || r.Namespace.Global || r.Namespace.ActiveCluster == "" {
		t.Errorf("namespace = %+v, want %s, local, with its cluster", r.Namespace, e.ns)
	}
	text := e.mustRun("status")
	for _, want := range []string{"namespace", e.ns, "sync", "running", "cursor", "published"} {
		if !strings.Contains(text, want) {
			t.Errorf("status output lacks %q:\n%s", want, text)
		}
	}

	out := e.mustRun("pause")
	if !strings.Contains(out, "paused at cursor") {
		t.Errorf("pause said %q", out)
	}
	paused := e.status()
	if paused.Sync.State != workflows.StatePaused || paused.Pending != 0 {
		t.Fatalf("after pause: state %s, %d activities pending; want paused, none", paused.Sync.State, paused.Pending)
	}
	executions := e.feed.executions.Load()

	e.mustRun("resync", "-cursor", "r1")
	e.mustRun("resume")
	stacktest.WaitFor(t, 30*time.Second, "an execution from the resync's cursor", func() error {
		for {
			select {
			case c := <-e.feed.cursors:
				if c == "r1" {
					return nil
				}
			default:
				return fmt.Errorf("no execution started at r1 (%d executions, %d before the pause ended)", e.feed.executions.Load(), executions)
			}
		}
	})
	if r := e.status(); r.Sync.State != workflows.StateRunning {
		t.Errorf("after resume: state %s", r.Sync.State)
	}

	code, _, errOut := e.syncctl("failover", "-to", "b")
	if code != exitFail || !strings.Contains(errOut, "local to cluster") {
		t.Errorf("failover of a local namespace: exit %d, %q; want %d and why", code, errOut, exitFail)
	}
}

// Usage errors exit 2 naming what is wrong, before anything is dialled.
func TestSyncctlUsage(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no command", map[string]string{"TEMPORAL_ADDRESS": "127.0.0.1:1"}, nil, "no command"},
		{"no address", nil, []string{"status"}, "TEMPORAL_ADDRESS"},
		{"unknown command", map[string]string{"TEMPORAL_ADDRESS": "127.0.0.1:1"}, []string{"stop"}, `unknown command "stop"`},
		{"resync without a cursor", map[string]string{"TEMPORAL_ADDRESS": "127.0.0.1:1"}, []string{"resync"}, "resync needs -cursor"},
		{"failover without a cluster", map[string]string{"TEMPORAL_ADDRESS": "127.0.0.1:1"}, []string{"failover"}, "failover needs -to"},
		{"stray argument", map[string]string{"TEMPORAL_ADDRESS": "127.0.0.1:1"}, []string{"pause", "now"}, "unexpected arguments"},
		{"bad flag", map[string]string{"TEMPORAL_ADDRESS": "127.0.0.1:1"}, []string{"status", "-yaml"}, "-yaml"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tt.args, func(k string) string { return tt.env[k] }, &out, &errOut)
			if code != exitUsage || !strings.Contains(errOut.String(), tt.want) || !strings.Contains(errOut.String(), "usage: syncctl") {
				t.Errorf("exit %d, stderr %q; want %d naming %q and the usage", code, errOut.String(), exitUsage, tt.want)
			}
		})
	}
}

// A server that cannot be reached fails the command (exit 1) within its
// timeout, saying where it tried.
func TestSyncctlUnreachableServer(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-address", "127.0.0.1:1", "-timeout", "2s", "status"}, func(string) string { return "" }, &out, &errOut)
	if code != exitFail || !strings.Contains(errOut.String(), "127.0.0.1:1") {
		t.Errorf("exit %d, stderr %q; want %d naming the address", code, errOut.String(), exitFail)
	}
}
