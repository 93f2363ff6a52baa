package workflows

import "time"

// The sync workflow's contract: callers (workers/sync, the internal app, tests
// and operators with the temporal CLI) use these names, never literals.
const (
	// WorkflowID is the one ID the sync runs under. Temporal runs at most one
	// open execution per ID, which is what makes the sync a singleton.
	WorkflowID = "chat-sync"
	// TaskQueue is the sync's own task queue; only sync workers poll it.
	TaskQueue = "chat-sync"

	// QueryStatus answers a Status.
	QueryStatus = "status"
	// SignalPause stops polling once the running activity reports (within
	// DefaultReportInterval); the cursor stays where it is.
	SignalPause = "pause"
	// SignalResume undoes SignalPause.
	SignalResume = "resume"
	// SignalResync restarts polling from a ResyncRequest's cursor and clears a
	// failure such as an expired cursor.
	SignalResync = "resync"
)

// Timeouts and intervals of the sync's activity.
const (
	// HeartbeatTimeout is how long the server waits for a heartbeat of the
	// running poll activity before it gives the activity to another worker.
	// It bounds the failover gap after a worker dies (kill -9, a lost node):
	// the gap is about this plus the retry's dispatch. The activity heartbeats
	// after every poll, and a poll long-polls for at most 1 s, so a healthy
	// worker heartbeats at least every ~1 s even when idle; 4 s tolerates a
	// few missed beats (GC, a busy 2-core machine) without false failovers,
	// and a false one costs duplicates in Kafka, never loss.
	HeartbeatTimeout = 4 * time.Second
	// DefaultReportInterval is how long one activity execution polls before it
	// returns its progress to the workflow: the freshness of the status query
	// and the delay of a pause. Shorter means more history events.
	DefaultReportInterval = 5 * time.Second
	// DefaultMaxHistoryEvents is the history length after which a run
	// continues as new (far below Temporal's 10k-event warning; at one
	// activity per report interval, about every 25 minutes).
	DefaultMaxHistoryEvents = 2000
	// DefaultPageSize is how many changes one poll asks for (the feed's
	// maximum: one Kafka transaction per page).
	DefaultPageSize = 1000
)

// SyncInput starts a run of the sync workflow. A run that continues as new
// passes its state on in the same struct.
type SyncInput struct {
	// Cursor is the feed position to resume after; "" starts at the oldest
	// change external still retains.
	Cursor string `json:"cursor"`
	// Paused starts the run paused.
	Paused bool `json:"paused,omitempty"`
	// Failure, when set, is why the sync stopped (see Status.Failure); it is
	// carried over so that a run continued as new stays failed until resync.
	Failure string `json:"failure,omitempty"`
	// Totals are the counters of the runs before this one.
	Totals Totals `json:"totals"`
	// Options tune the run; zero values take the defaults above.
	Options Options `json:"options"`
}

// Options tune the sync workflow; tests shorten them.
type Options struct {
	ReportInterval   time.Duration `json:"reportInterval,omitempty"`
	MaxHistoryEvents int           `json:"maxHistoryEvents,omitempty"`
	PageSize         int           `json:"pageSize,omitempty"`
}

// Totals count the sync's work since the workflow was first started.
type Totals struct {
	Changes int64 `json:"changes"` // records published (duplicates after a failover included)
	Polls   int64 `json:"polls"`
	Runs    int64 `json:"runs"` // runs so far, this one included (continue-as-new count + 1)
}

// ResyncRequest is the SignalResync payload: the cursor to resume after ("" =
// the oldest retained change). Changes from there on are published again;
// consumers absorb the duplicates by version.
type ResyncRequest struct {
	Cursor string `json:"cursor"`
}

// State is what the sync is doing.
type State string

// The sync's states.
const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateFailed  State = "failed" // stopped by an error retrying cannot fix; see Status.Failure
)

// Status is the answer to QueryStatus: the workflow's view as of the last
// report of its activity (AsOf).
type Status struct {
	State   State  `json:"state"`
	Failure string `json:"failure,omitempty"`
	Cursor  string `json:"cursor"`
	Worker  string `json:"worker,omitempty"`  // identity of the worker that ran the last activity
	Cluster string `json:"cluster,omitempty"` // Kafka cluster that took the last changes
	Totals  Totals `json:"totals"`
	// LastPoll is the time of the last successful poll of external's feed.
	LastPoll time.Time `json:"lastPoll"`
	// LagSeconds is how far behind external the last published change was
	// when Kafka acknowledged it; 0 when the last poll found nothing new.
	LagSeconds float64 `json:"lagSeconds"`
	// LastError is the last poll or publish error of the last activity, if
	// its latest attempt had not recovered from it yet.
	LastError string    `json:"lastError,omitempty"`
	AsOf      time.Time `json:"asOf"`
}
