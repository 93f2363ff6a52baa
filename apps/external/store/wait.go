package store

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// notifyChannel is the channel on which Stores tell each other about writes.
const notifyChannel = "external_changes"

// Reconnect backoff of the LISTEN connection.
const (
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 5 * time.Second
)

// Re-read interval while committed changes wait behind the horizon: the
// transaction holding it back may belong to anything on the Postgres cluster
// (another database, a migration, a psql session), and nothing notifies us
// when it ends. Short at first, because it is usually a write about to
// commit; longer the longer it lasts.
const (
	pendingMinBackoff = 2 * time.Millisecond
	pendingMaxBackoff = 64 * time.Millisecond
)

// feedHead is what Wait needs to know about the feed, as of the last refresh.
type feedHead struct {
	mu        sync.Mutex
	ready     bool          // refreshed at least once
	closed    bool          // the Store is closed
	head      position      // newest row below the horizon, or the watermark if later
	watermark position      // newest pruned row
	changed   chan struct{} // closed and replaced whenever the fields above change
	waiters   atomic.Int64  // Wait calls asleep
}

// load returns a copy of the state and the channel closed at its next change.
func (f *feedHead) load() (ready, closed bool, head, watermark position, changed <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready, f.closed, f.head, f.watermark, f.changed
}

// publish stores a refreshed head and wakes the waiters if it moved. It
// reports whether it moved.
func (f *feedHead) publish(head, watermark position) bool {
	if head.less(watermark) {
		head = watermark
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || (f.ready && f.head == head && f.watermark == watermark) {
		return false
	}
	f.ready, f.head, f.watermark = true, head, watermark
	close(f.changed)
	f.changed = make(chan struct{})
	return true
}

func (f *feedHead) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	close(f.changed)
}

// poke sends on a buffered(1) wake-up channel without blocking: wake-ups that
// arrive while one is pending are coalesced into it.
func poke(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// signal asks the refresher to re-read the feed head.
func (s *Store) signal() { poke(s.wake) }

// written reports that a write transaction of this Store ended, committed or
// rolled back: either may move the horizon. It wakes the refresher and the
// notifier.
func (s *Store) written() {
	poke(s.wake)
	poke(s.notify)
}

// headSQL reads the newest feed position below the horizon, the watermark,
// and whether committed changes wait at or above the horizon.
const headSQL = `
SELECT w.pruned_xid::text, w.pruned_seq, h.xid::text, h.seq,
       EXISTS (SELECT 1 FROM changes WHERE xid >= pg_snapshot_xmin(pg_current_snapshot()))
FROM feed_state w
LEFT JOIN LATERAL (
    SELECT xid, seq FROM changes
    WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY xid DESC, seq DESC
    LIMIT 1
) h ON true`

// refresh re-reads the feed head and publishes it. It reports whether the
// head moved and whether committed changes wait behind the horizon. Refreshes
// are serialized so that an older reading never overwrites a newer one.
func (s *Store) refresh(ctx context.Context) (moved, pending bool, err error) {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	var (
		wXid string
		wSeq int64
		hXid *string
		hSeq *int64
	)
	if err := s.pool.QueryRow(ctx, headSQL).Scan(&wXid, &wSeq, &hXid, &hSeq, &pending); err != nil {
		return false, false, fmt.Errorf("read feed head: %w", err)
	}
	watermark, err := parsePosition(wXid, wSeq)
	if err != nil {
		return false, false, fmt.Errorf("read feed head: %w", err)
	}
	head := watermark
	if hXid != nil {
		if head, err = parsePosition(*hXid, *hSeq); err != nil {
			return false, false, fmt.Errorf("read feed head: %w", err)
		}
	}
	return s.feed.publish(head, watermark), pending, nil
}

// refreshLoop re-reads the feed head after every wake-up, every
// FallbackInterval, and, while committed changes wait behind the horizon,
// every few milliseconds, until ctx ends.
func (s *Store) refreshLoop(ctx context.Context) {
	timer := time.NewTimer(s.opts.FallbackInterval)
	defer timer.Stop()
	health := failureLog{log: s.log, what: "feed head refresh"}
	backoff := pendingMinBackoff
	for {
		moved, pending, err := s.refresh(ctx)
		if ctx.Err() != nil {
			return
		}
		health.observe(err)
		next := s.opts.FallbackInterval
		switch {
		case !pending || moved:
			backoff = pendingMinBackoff
		default:
			backoff = min(2*backoff, pendingMaxBackoff)
		}
		if pending {
			next = min(next, backoff)
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// listenLoop keeps one connection listening for other Stores' notifications,
// reconnecting with backoff, until ctx ends.
func (s *Store) listenLoop(ctx context.Context) {
	backoff := listenMinBackoff
	for {
		started := time.Now()
		err := s.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("external store: feed listener lost its connection", "err", err, "retry_in", backoff)
		s.signal() // notifications may have been missed
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if time.Since(started) > time.Minute {
			backoff = listenMinBackoff
		} else {
			backoff = min(2*backoff, listenMaxBackoff)
		}
	}
}

// listen takes a connection out of the pool, LISTENs on it and signals the
// refresher for every notification until the connection fails or ctx ends.
func (s *Store) listen(ctx context.Context) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire listener connection: %w", err)
	}
	// Hijacked: a connection in LISTEN state must not go back to the pool.
	conn := pc.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{notifyChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen on %s: %w", notifyChannel, err)
	}
	s.signal() // changes committed before LISTEN took effect
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("wait for notification on %s: %w", notifyChannel, err)
		}
		s.signal()
	}
}

// notifyLoop tells the other processes on this database (through
// pg_notify) that this Store wrote, one notification at a time, coalescing
// the writes that end meanwhile.
//
// The notification is not sent from inside the write transactions: a
// transaction that notifies holds a database-wide lock from its pre-commit
// until its commit record is flushed, so notifying writers could not share a
// WAL flush and wrote at about a third less throughput (measured). Sent right
// after the commit, it wakes the other processes just as early; if this
// process dies in between, their fallback tick covers it.
func (s *Store) notifyLoop(ctx context.Context) {
	health := failureLog{log: s.log, what: "notifying other processes"}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.notify:
		}
		_, err := s.pool.Exec(ctx, `SELECT pg_notify($1, '')`, notifyChannel)
		if ctx.Err() != nil {
			return
		}
		health.observe(err)
	}
}

// failureLog logs when a background operation starts failing and when it
// recovers, rather than on every failed attempt.
type failureLog struct {
	log     *slog.Logger
	what    string
	failing bool
}

func (f *failureLog) observe(err error) {
	switch {
	case err != nil && !f.failing:
		f.log.Error("external store: "+f.what+" failing", "err", err)
	case err == nil && f.failing:
		f.log.Info("external store: " + f.what + " recovered")
	}
	f.failing = err != nil
}

// Wait blocks until Changes(cursor) would return changes, or ctx ends (it then
// returns ctx.Err()), or the Store is closed (ErrClosed). It returns at once
// with ErrBadCursor for a malformed cursor, and with ErrCursorExpired for a
// cursor it knows to be expired (after a Prune by another process it may
// return nil instead, and Changes reports the expiry).
//
// It wakes within a few milliseconds of the commit of a change by this Store
// or by another Store on the same database (LISTEN/NOTIFY), and of the end of
// a transaction that held committed changes back, and within
// Options.FallbackInterval of anything else. Sleeping waiters cost no
// database work.
func (s *Store) Wait(ctx context.Context, cursor string) error {
	after, err := decodeCursor(cursor)
	if err != nil {
		return fmt.Errorf("wait for changes: %w", err) // the cursor is arbitrary input: not logged
	}
	for {
		ready, closed, head, watermark, changed := s.feed.load()
		switch {
		case closed:
			return ErrClosed
		case !ready:
		case !after.isZero() && after.less(watermark):
			return fmt.Errorf("wait for changes after cursor %q: %w", cursor, ErrCursorExpired)
		case after.less(head):
			return nil
		}
		s.feed.waiters.Add(1)
		select {
		case <-changed:
			s.feed.waiters.Add(-1)
		case <-ctx.Done():
			s.feed.waiters.Add(-1)
			return ctx.Err()
		}
	}
}

// Waiters returns how many Wait calls are asleep, for metrics and tests.
func (s *Store) Waiters() int {
	return int(s.feed.waiters.Load())
}
