package workflows_test

import (
	"log/slog"
	"path/filepath"
	"testing"

	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/chatpoc/chat-poc/workflows"
)

// TestSyncReplaysRecordedHistories replays histories recorded on a real
// server (workflows/testdata, written by workers/sync's record_history_test.go)
// against the current code: a change that is not deterministic for them fails
// here instead of in a running sync. Each history has signals (pause, resume,
// resync), an activity attempt that failed over to another worker after a
// kill -9, and ends by continuing as new.
func TestSyncReplaysRecordedHistories(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "sync-history-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded histories in testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflow(workflows.Sync)
			logger := tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
			if err := r.ReplayWorkflowHistoryFromJSONFile(logger, f); err != nil {
				t.Fatalf("replay %s: %v", f, err)
			}
		})
	}
}
