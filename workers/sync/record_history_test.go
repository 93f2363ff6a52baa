//go:build record

// Records a history of the sync workflow for the replay test in
// workflows/replay_test.go: run it after changing the workflow in a way that
// is guarded by workflow.GetVersion, and commit the new file next to the old
// ones (old histories must keep replaying):
//
//	bin/devstack exec -profile geo -ports auto -- \
//	  go test -tags record -run TestRecordHistory -count=1 ./workers/sync/
package main

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/workflows"
)

func TestRecordHistory(t *testing.T) {
	e := newSyncEnv(t)
	ctx := context.Background()
	// Start the run ourselves, with a short history limit, so it continues
	// as new within the recording.
	if _, err := e.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.WorkflowID, TaskQueue: workflows.TaskQueue},
		workflows.Sync, workflows.SyncInput{Options: workflows.Options{MaxHistoryEvents: 80, ReportInterval: 2 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	desc, err := e.tc.DescribeWorkflowExecution(ctx, workflows.WorkflowID, "")
	if err != nil {
		t.Fatal(err)
	}
	firstRun := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	e.startWorkers(twoWorkers)
	wait := e.storm(ctx, loadgen.Config{Rate: 50, Duration: 40 * time.Second, Chats: 5})

	signal := func(name string, arg any) {
		if err := e.tc.SignalWorkflow(ctx, workflows.WorkflowID, "", name, arg); err != nil {
			t.Fatal(err)
		}
	}
	signal(workflows.SignalPause, nil)
	time.Sleep(5 * time.Second) // paused for a while: part of the recorded behaviour
	signal(workflows.SignalResume, nil)
	st, err := e.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	signal(workflows.SignalResync, workflows.ResyncRequest{Cursor: st.Cursor})
	who := e.waitActive(time.Minute)
	e.kill(who) // a failed attempt, retried on the other worker
	e.startWorker(who, "a")
	e.signal(who, syscall.SIGCONT)
	wait()

	// Wait for the first run to continue as new, then save its history.
	var events []*historypb.HistoryEvent
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("the first run did not continue as new")
		}
		events = events[:0]
		it := e.tc.GetWorkflowHistory(ctx, workflows.WorkflowID, firstRun, false, 0)
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, ev)
		}
		if len(events) > 0 && events[len(events)-1].GetWorkflowExecutionContinuedAsNewEventAttributes() != nil {
			break
		}
	}
	b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(&historypb.History{Events: events})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join("..", "..", "workflows", "testdata", "sync-history-"+time.Now().UTC().Format("20060102")+".json")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d events to %s", len(events), out)
}
