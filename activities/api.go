package activities

import "time"

// Error types of the activities' non-retryable application errors, for the
// workflow's retry policy and its handling of a failed activity.
const (
	// ErrTypeCursorExpired: the feed no longer holds the changes after the
	// cursor; resuming would skip them, so the sync stops until an operator
	// sends a resync signal.
	ErrTypeCursorExpired = "CursorExpired"
	// ErrTypeBadCursor: the feed does not recognise the cursor at all.
	ErrTypeBadCursor = "BadCursor"
	// ErrTypeFenced: another attempt initialised the Kafka transactional
	// producer after this one; this attempt is stale (a zombie) or lost its
	// producer, and must not publish another record. Retryable: if this
	// attempt is in fact the current one, its retry re-initialises the
	// producer (fencing whatever was stale).
	ErrTypeFenced = "Fenced"
)

// SyncParams is the input of Activities.Sync.
type SyncParams struct {
	// Cursor is the feed position to resume after; a retried attempt resumes
	// after its last heartbeat's cursor instead.
	Cursor string `json:"cursor"`
	// ReportAfter is how long the activity polls before returning its progress.
	ReportAfter time.Duration `json:"reportAfter"`
	// PageSize is the feed page size; every page is one Kafka transaction.
	PageSize int `json:"pageSize"`
}

// Progress is what Activities.Sync heartbeats and returns: its checkpoint and
// counters. Cursor moves only after Kafka acknowledged every change up to it.
type Progress struct {
	Cursor  string `json:"cursor"`
	Changes int64  `json:"changes"` // records published by this execution (all its attempts)
	Polls   int64  `json:"polls"`   // successful polls
	// LastPoll is the time of the last successful poll.
	LastPoll time.Time `json:"lastPoll"`
	// Lag is how old the last published change was when Kafka acknowledged
	// it; 0 after a poll that found nothing new.
	Lag       time.Duration `json:"lag"`
	Worker    string        `json:"worker"`              // identity of the worker running the attempt
	Cluster   string        `json:"cluster,omitempty"`   // Kafka cluster of the last publish
	LastError string        `json:"lastError,omitempty"` // last poll/publish error not yet recovered from
}
