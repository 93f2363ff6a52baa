package api

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/chatpoc/chat-poc/workflows"
)

// statusEvery is how often the sync's status is queried.
const statusEvery = 2 * time.Second

// SyncStatusJSON is GET /api/sync-status: the sync workflow's status query
// as last answered, or why it could not be read.
type SyncStatusJSON struct {
	Available bool              `json:"available"`
	Error     string            `json:"error,omitempty"`
	Status    *workflows.Status `json:"status,omitempty"`
	CheckedAt time.Time         `json:"checkedAt"`
}

// SyncStatus keeps the sync workflow's status, queried in the background so
// that no page load waits on Temporal.
type SyncStatus struct {
	tc  client.Client // nil: no Temporal configured
	log *slog.Logger

	mu   sync.Mutex
	last SyncStatusJSON
}

// NewSyncStatus returns a status kept from tc (nil: not configured).
func NewSyncStatus(tc client.Client, log *slog.Logger) *SyncStatus {
	s := &SyncStatus{tc: tc, log: log}
	s.last.Error = "not queried yet"
	if tc == nil {
		s.last.Error = "no Temporal address configured"
	}
	return s
}

// Run queries the status every statusEvery until ctx ends.
func (s *SyncStatus) Run(ctx context.Context) {
	if s.tc == nil {
		return
	}
	tick := time.NewTicker(statusEvery)
	defer tick.Stop()
	for {
		s.query(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *SyncStatus) query(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, statusEvery)
	defer cancel()
	next := SyncStatusJSON{CheckedAt: time.Now().UTC()}
	v, err := s.tc.QueryWorkflow(qctx, workflows.WorkflowID, "", workflows.QueryStatus)
	var st workflows.Status
	if err == nil {
		err = v.Get(&st)
	}
	if err != nil {
		next.Error = "the sync's status is unavailable"
		s.log.Debug("query sync status", "err", err)
	} else {
		next.Available, next.Status = true, &st
	}
	s.mu.Lock()
	s.last = next
	s.mu.Unlock()
}

// Get returns the last status.
func (s *SyncStatus) Get() SyncStatusJSON {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}
