package workflows_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/converter"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/chatpoc/chat-poc/activities"
	"github.com/chatpoc/chat-poc/workflows"
)

// fakeFeed stands in for the poll activity: every execution advances the
// cursor by one page of changes and reports as worker "w1".
type fakeFeed struct {
	env   *testsuite.TestWorkflowEnvironment
	calls atomic.Int64
	seen  chan activities.SyncParams // every execution's params, in order
}

func newFakeFeed(env *testsuite.TestWorkflowEnvironment) *fakeFeed {
	return &fakeFeed{env: env, seen: make(chan activities.SyncParams, 10000)}
}

// eventsPerExecution is how many history events one activity execution adds
// on a real server (scheduled, started, completed, and a workflow task's
// three); the test environment does not count events itself.
const eventsPerExecution = 6

func (f *fakeFeed) sync(_ context.Context, p activities.SyncParams) (activities.Progress, error) {
	n := f.calls.Add(1)
	f.env.SetCurrentHistoryLength(int(n) * eventsPerExecution)
	f.seen <- p
	return activities.Progress{
		Cursor: "c" + strconv.FormatInt(n, 10), Changes: 10, Polls: 2,
		LastPoll: time.Unix(1000+n, 0).UTC(), Lag: 30 * time.Millisecond, Worker: "w1", Cluster: "a",
	}, nil
}

func (f *fakeFeed) params(t *testing.T) []activities.SyncParams {
	t.Helper()
	var ps []activities.SyncParams
	for {
		select {
		case p := <-f.seen:
			ps = append(ps, p)
		default:
			return ps
		}
	}
}

func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	s.SetLogger(tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflow(workflows.Sync)
	env.RegisterActivity(&activities.Activities{})
	env.SetTestTimeout(30 * time.Second)
	return env
}

// testWriter sends the SDK's warnings and errors to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// continuedInput returns the input a run that continued as new passed on.
func continuedInput(t *testing.T, env *testsuite.TestWorkflowEnvironment) workflows.SyncInput {
	t.Helper()
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	err := env.GetWorkflowError()
	var can *workflow.ContinueAsNewError
	if !errors.As(err, &can) {
		t.Fatalf("workflow ended with %v, want continue-as-new", err)
	}
	var in workflows.SyncInput
	if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

// queryStatus queries the workflow; it runs in delayed callbacks, off the
// test's goroutine, so it reports errors without stopping the goroutine.
func queryStatus(t *testing.T, env *testsuite.TestWorkflowEnvironment) workflows.Status {
	t.Helper()
	var st workflows.Status
	v, err := env.QueryWorkflow(workflows.QueryStatus)
	if err == nil {
		err = v.Get(&st)
	}
	if err != nil {
		t.Errorf("query status: %v", err)
	}
	return st
}

func TestSyncCarriesCursorAcrossContinueAsNew(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	f := newFakeFeed(env)
	env.OnActivity("Sync", mock.Anything, mock.Anything).Return(f.sync)

	env.ExecuteWorkflow(workflows.Sync, workflows.SyncInput{
		Cursor: "c0",
		Totals: workflows.Totals{Changes: 5, Polls: 1, Runs: 3},
		Options: workflows.Options{
			MaxHistoryEvents: 40, ReportInterval: 2 * time.Second, PageSize: 7,
		},
	})

	in := continuedInput(t, env)
	calls := f.calls.Load()
	if calls < 2 {
		t.Fatalf("activity ran %d times before continue-as-new, want several", calls)
	}
	if want := "c" + strconv.FormatInt(calls, 10); in.Cursor != want {
		t.Errorf("next run's cursor = %q, want %q (the last activity's checkpoint)", in.Cursor, want)
	}
	if want := (workflows.Totals{Changes: 5 + 10*calls, Polls: 1 + 2*calls, Runs: 4}); in.Totals != want {
		t.Errorf("next run's totals = %+v, want %+v", in.Totals, want)
	}
	if in.Options.MaxHistoryEvents != 40 || in.Options.PageSize != 7 {
		t.Errorf("options not carried over: %+v", in.Options)
	}
	ps := f.params(t)
	for i, p := range ps {
		want := "c" + strconv.Itoa(i)
		if p.Cursor != want || p.ReportAfter != 2*time.Second || p.PageSize != 7 {
			t.Errorf("execution %d got %+v, want cursor %q, reportAfter 2s, pageSize 7", i, p, want)
		}
	}
}

func TestSyncPauseResumeAndStatus(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	f := newFakeFeed(env)
	env.OnActivity("Sync", mock.Anything, mock.Anything).After(5 * time.Second).Return(f.sync)

	var (
		atPause, whilePaused int64
		paused, running      workflows.Status
	)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalPause, nil)
	}, 12*time.Second) // during the third execution: it finishes, then no fourth starts
	env.RegisterDelayedCallback(func() {
		atPause = f.calls.Load()
		paused = queryStatus(t, env)
	}, 20*time.Second)
	env.RegisterDelayedCallback(func() {
		whilePaused = f.calls.Load()
		env.SignalWorkflow(workflows.SignalResume, nil)
	}, time.Hour)
	env.RegisterDelayedCallback(func() {
		running = queryStatus(t, env)
	}, time.Hour+time.Minute)

	env.ExecuteWorkflow(workflows.Sync, workflows.SyncInput{Options: workflows.Options{MaxHistoryEvents: 200}})
	in := continuedInput(t, env)

	if atPause != 3 || whilePaused != 3 {
		t.Errorf("executions: %d when paused, %d an hour later; want 3 and 3 (none while paused)", atPause, whilePaused)
	}
	if paused.State != workflows.StatePaused || paused.Cursor != "c3" {
		t.Errorf("status while paused = %+v, want state paused at cursor c3", paused)
	}
	if paused.Worker != "w1" || paused.Cluster != "a" || paused.Totals.Changes != 30 || paused.Totals.Polls != 6 ||
		paused.LagSeconds != 0.03 || !paused.LastPoll.Equal(time.Unix(1003, 0)) || paused.AsOf.IsZero() {
		t.Errorf("status while paused = %+v, want worker w1, cluster a, 30 changes, 6 polls, lag 0.03, last poll at 1003", paused)
	}
	if running.State != workflows.StateRunning || f.calls.Load() <= whilePaused {
		t.Errorf("after resume: state %q, %d executions; want running and more than %d", running.State, f.calls.Load(), whilePaused)
	}
	if in.Paused {
		t.Error("the next run would start paused")
	}
}

func TestSyncPausedStateSurvivesContinueAsNew(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	f := newFakeFeed(env)
	env.OnActivity("Sync", mock.Anything, mock.Anything).Return(f.sync)
	env.RegisterDelayedCallback(func() {
		if st := queryStatus(t, env); st.State != workflows.StatePaused {
			t.Errorf("state = %q, want paused", st.State)
		}
		// A paused run never reaches its history limit by itself; resync
		// and resume so it does.
		env.SignalWorkflow(workflows.SignalResume, nil)
	}, time.Minute)

	env.ExecuteWorkflow(workflows.Sync, workflows.SyncInput{Cursor: "c9", Paused: true, Options: workflows.Options{MaxHistoryEvents: 30}})
	continuedInput(t, env)
	if ps := f.params(t); len(ps) == 0 || ps[0].Cursor != "c9" {
		t.Errorf("first execution after resume: %+v, want cursor c9", ps)
	}
}

func TestSyncCursorExpiredFailsVisiblyUntilResync(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	var calls atomic.Int64
	seen := make(chan string, 100)
	env.OnActivity("Sync", mock.Anything, mock.Anything).After(time.Second).Return(
		func(_ context.Context, p activities.SyncParams) (activities.Progress, error) {
			seen <- p.Cursor
			n := calls.Add(1)
			env.SetCurrentHistoryLength(int(n) * eventsPerExecution)
			if n == 1 {
				return activities.Progress{}, temporal.NewNonRetryableApplicationError(
					"feed expired", activities.ErrTypeCursorExpired, nil)
			}
			return activities.Progress{Cursor: p.Cursor + "+", Worker: "w2"}, nil
		})
	var failed workflows.Status
	env.RegisterDelayedCallback(func() {
		failed = queryStatus(t, env)
		env.SignalWorkflow(workflows.SignalResync, workflows.ResyncRequest{Cursor: "from-operator"})
	}, time.Hour)

	env.ExecuteWorkflow(workflows.Sync, workflows.SyncInput{Cursor: "old", Options: workflows.Options{MaxHistoryEvents: 40}})
	in := continuedInput(t, env)

	if failed.State != workflows.StateFailed || failed.Cursor != "old" ||
		failed.Failure != activities.ErrTypeCursorExpired+": feed expired" {
		t.Errorf("status after the expired cursor = %+v, want failed at cursor old with the reason", failed)
	}
	if got := <-seen; got != "old" {
		t.Errorf("first execution polled after %q, want old", got)
	}
	if got := <-seen; got != "from-operator" {
		t.Errorf("execution after resync polled after %q, want from-operator", got)
	}
	if in.Failure != "" {
		t.Errorf("next run inherits failure %q", in.Failure)
	}
}

func TestSyncResyncDuringActivityWinsOverItsCheckpoint(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	f := newFakeFeed(env)
	env.OnActivity("Sync", mock.Anything, mock.Anything).After(5 * time.Second).Return(f.sync)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.SignalResync, workflows.ResyncRequest{Cursor: ""})
	}, 7*time.Second) // during the second execution

	env.ExecuteWorkflow(workflows.Sync, workflows.SyncInput{Cursor: "start", Options: workflows.Options{MaxHistoryEvents: 30}})
	continuedInput(t, env)
	ps := f.params(t)
	if len(ps) < 3 || ps[0].Cursor != "start" || ps[1].Cursor != "c1" || ps[2].Cursor != "" {
		t.Errorf("executions polled after %+v; want start, c1, then the resync's empty cursor", ps)
	}
}
