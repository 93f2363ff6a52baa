package activities

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// stallWatch measures whether the sync attempt running on this worker makes
// progress, for the worker's watchdog: the feed had changes (a poll
// returned some) and the checkpoint has not moved past them since. A poll
// that finds nothing new is progress (caught up); a feed that cannot be
// read is external's trouble, not a stall of ours (it shows in the status
// query's lastError). Safe for concurrent use.
type stallWatch struct {
	mu      sync.Mutex
	running int       // attempts running on this worker
	pending time.Time // first poll with changes not yet checkpointed; zero: none
	cursor  string    // the checkpoint then
}

func (s *stallWatch) begin() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running++
}

// end: the attempt left this worker; what it had pending is another
// worker's (or a later attempt's) to publish.
func (s *stallWatch) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	if s.running == 0 {
		s.pending = time.Time{}
	}
}

// polled notes a poll that returned changes after cursor.
func (s *stallWatch) polled(at time.Time, cursor string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending.IsZero() {
		s.pending, s.cursor = at, cursor
	}
}

// checkpointed notes that the checkpoint is current (published, or nothing
// new).
func (s *stallWatch) checkpointed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = time.Time{}
}

// Probe is a watchdog.Probe of the sync on this worker: how long changes
// the feed returned have waited unpublished. (On Metrics, not Activities:
// the worker registers every exported method of Activities as an activity.)
func (m *Metrics) Probe(context.Context) (time.Duration, string, error) {
	s := &m.stall
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == 0 || s.pending.IsZero() {
		return 0, "", nil
	}
	return time.Since(s.pending), fmt.Sprintf("changes after cursor %q polled, not yet published", s.cursor), nil
}
