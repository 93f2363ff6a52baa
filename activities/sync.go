// Package activities holds the I/O the workflows drive: the sync activity
// polls external's change feed and publishes every change to Kafka, moving
// its checkpoint only after Kafka acknowledged the changes.
package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/feed"
	"github.com/chatpoc/chat-poc/internal/publisher"
)

// Feed is the change feed the sync polls (a *feed.Client).
type Feed interface {
	Poll(ctx context.Context, cursor string, limit int, wait time.Duration) (feed.Page, error)
}

// Publisher writes one batch of records to Kafka in one transaction and
// returns the cluster that took it (a *publisher.Publisher).
type Publisher interface {
	Publish(ctx context.Context, recs []publisher.Record) (cluster string, err error)
}

// Polling constants of the sync activity.
const (
	// longPollWait is how long one poll waits for a change. It keeps the
	// heartbeat interval of an idle activity near 1 s, well inside the
	// workflow's heartbeat timeout.
	longPollWait = time.Second
	// pollMargin is how much longer than its long-poll wait a poll may take
	// before it counts as failed (a hung or very slow external): kept below
	// the heartbeat timeout, so that a slow external is retried, visibly,
	// by the attempt itself instead of looking like a dead worker.
	pollMargin = 2 * time.Second
	// retryInitial and retryMax bound the backoff between failed polls or
	// publishes (a 429's Retry-After may ask for longer).
	retryInitial = 100 * time.Millisecond
	retryMax     = 5 * time.Second
	// maxRetryAfter caps how long a 429's Retry-After is honoured, so that
	// one wait stays well inside the activity's start-to-close timeout.
	maxRetryAfter = 30 * time.Second
	// feedDefaultLimit is the feed's page size when none is asked for: the
	// size a SyncParams.PageSize of 0 stands for.
	feedDefaultLimit = 100
)

// Activities are the sync's activities; register a *Activities with the
// worker. Its methods are safe for concurrent use.
type Activities struct {
	feed     Feed
	pub      Publisher
	identity string
	metrics  *Metrics
	log      *slog.Logger
}

// New returns the activities polling f and publishing with p. identity names
// this worker in the progress it reports; m may be nil.
func New(f Feed, p Publisher, identity string, m *Metrics, log *slog.Logger) *Activities {
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Activities{feed: f, pub: p, identity: identity, metrics: m, log: log}
}

// Sync polls the feed after in.Cursor and publishes every change, in feed
// order, one Kafka transaction per page, for in.ReportAfter; then it returns
// its progress. It heartbeats its checkpoint after every poll, so a retried
// attempt (after this worker died, froze or lost its heartbeat) resumes after
// the last checkpoint Kafka acknowledged: changes are published at least
// once, and never skipped. When the worker stops, it returns its progress at
// once, so that another worker takes over without waiting for a timeout.
//
// Errors of the feed and of Kafka are retried here, with capped backoff and
// external's Retry-After, and reported in Progress.LastError; the activity
// fails only with a non-retryable ErrTypeCursorExpired or ErrTypeBadCursor
// (resuming would skip changes), or with ErrTypeFenced when a newer attempt
// took the Kafka producer.
func (a *Activities) Sync(ctx context.Context, in SyncParams) (Progress, error) {
	prog := Progress{Cursor: in.Cursor}
	if activity.HasHeartbeatDetails(ctx) {
		var last Progress
		if err := activity.GetHeartbeatDetails(ctx, &last); err != nil {
			return prog, fmt.Errorf("read last heartbeat: %w", err)
		}
		prog = last
		prog.Lag, prog.LastError = 0, ""
	}
	prog.Worker = a.identity
	info := activity.GetInfo(ctx)
	attempt := fmt.Sprintf("%s/%s#%d", info.WorkflowExecution.RunID, info.ActivityID, info.Attempt)
	log := a.log.With("workflowRun", info.WorkflowExecution.RunID, "attempt", info.Attempt)
	if info.Attempt > 1 {
		log.Info("resuming the sync after a failed attempt", "cursor", prog.Cursor)
	}
	a.metrics.active.Inc()
	defer a.metrics.active.Dec()
	a.metrics.stall.begin()
	defer a.metrics.stall.end()

	backoff := feed.Backoff{Initial: retryInitial, Max: retryMax}
	size := newPageSize(in.PageSize)
	deadline := time.Now().Add(in.ReportAfter)
	stop := activity.GetWorkerStopChannel(ctx)
	for time.Now().Before(deadline) {
		select {
		case <-stop:
			log.Info("worker stopping: handing the sync over", "cursor", prog.Cursor)
			return prog, nil
		case <-ctx.Done():
			log.Info("sync attempt ended", "reason", context.Cause(ctx), "cursor", prog.Cursor)
			return prog, ctx.Err()
		default:
		}
		err := a.step(ctx, &prog, attempt, size.n, min(longPollWait, time.Until(deadline)), log)
		if err == nil {
			size.grow()
			backoff.Reset()
			prog.LastError = ""
			activity.RecordHeartbeat(ctx, prog)
			continue
		}
		if errors.Is(err, feed.ErrPageTooLarge) && size.shrink() {
			// Not a failure: the same cursor, at once, for fewer changes.
			a.metrics.pagesShrunk.Inc()
			log.Debug("feed page too large; asking for fewer changes", "cursor", prog.Cursor, "pageSize", size.n)
			continue
		}
		if ferr := failure(err); ferr != nil {
			log.Warn("sync attempt ended", "reason", err, "cursor", prog.Cursor)
			return prog, ferr
		}
		if ctx.Err() != nil {
			log.Info("sync attempt ended", "reason", context.Cause(ctx), "cursor", prog.Cursor)
			return prog, ctx.Err()
		}
		if prog.LastError == "" {
			log.Warn("sync retrying", "err", err) // logged once per run of failures
		}
		prog.LastError = err.Error()
		activity.RecordHeartbeat(ctx, prog)
		delay := backoff.Next()
		if ra, ok := feed.RetryAfter(err); ok {
			delay = max(delay, min(ra, maxRetryAfter))
		}
		if !sleep(ctx, stop, delay, prog) {
			continue // the loop's head returns
		}
	}
	return prog, nil
}

// step polls one page and publishes it, advancing prog's checkpoint only
// after Kafka acknowledged the whole page — its dead letters included.
func (a *Activities) step(ctx context.Context, prog *Progress, attempt string, pageSize int, wait time.Duration, log *slog.Logger) error {
	began := time.Now()
	pctx, cancel := context.WithTimeout(ctx, wait+pollMargin)
	page, err := a.feed.Poll(pctx, prog.Cursor, pageSize, wait)
	cancel()
	if err != nil {
		a.metrics.polls.WithLabelValues(pollError).Inc()
		return err
	}
	polled := time.Now()
	a.metrics.polls.WithLabelValues(pollOK).Inc()
	a.metrics.pollSeconds.Observe(polled.Sub(began).Seconds())
	prog.Polls++
	prog.LastPoll = polled
	if len(page.Changes) == 0 {
		prog.Cursor, prog.Lag = page.Cursor, 0
		a.metrics.checkpoint(polled)
		a.metrics.stall.checkpointed()
		return nil
	}
	a.metrics.stall.polled(polled, prog.Cursor)
	recs, dead := Records(page.Changes, Source{Worker: a.identity, Attempt: attempt, Cursor: prog.Cursor})
	stopBeating := beatWhile(ctx, *prog)
	cluster, err := a.pub.Publish(ctx, recs)
	stopBeating()
	if err != nil {
		a.metrics.publishErrors.Inc()
		return err
	}
	acked := time.Now()
	a.metrics.published(cluster, page.Changes, dead, acked.Sub(polled))
	for _, d := range dead {
		log.Warn("feed change dead-lettered", "topic", DeadLetterTopic, "cluster", cluster,
			"sourceCursor", prog.Cursor, "sourceIndex", d.Index+1, "kind", shortText(string(d.Kind)),
			"chatId", shortText(d.ChatID), "bytes", d.Bytes, "reason", d.Reason)
	}
	prog.Cursor = page.Cursor
	prog.Changes += int64(len(recs))
	prog.Cluster = cluster
	if at := lastAt(page.Changes); !at.IsZero() {
		prog.Lag = max(0, acked.Sub(at))
	}
	a.metrics.checkpoint(acked)
	a.metrics.stall.checkpointed()
	return nil
}

// lastAt returns the time of the newest change of a page that has one (a
// malformed change may not).
func lastAt(changes []feed.Change) time.Time {
	for i := len(changes) - 1; i >= 0; i-- {
		if !changes[i].At.IsZero() {
			return changes[i].At
		}
	}
	return time.Time{}
}

// pageSize is the page size the sync asks for: the configured one, halved
// after a page too large to read (feed.ErrPageTooLarge), doubled back after
// each page read. It starts over with every activity execution.
type pageSize struct{ n, max int }

func newPageSize(n int) pageSize {
	if n <= 0 {
		n = feedDefaultLimit
	}
	return pageSize{n: n, max: n}
}

// shrink halves the size and reports whether it could (it is at least 1).
func (p *pageSize) shrink() bool {
	if p.n <= 1 {
		return false
	}
	p.n /= 2
	return true
}

func (p *pageSize) grow() { p.n = min(p.max, p.n*2) }

// publishBeat is how often a publish in progress, or a backoff, heartbeats
// (the unchanged checkpoint): a publish that fails over to the other Kafka
// cluster, or a backoff, may take longer than the heartbeat timeout, and the
// attempt is alive meanwhile. The publisher bounds every Kafka operation and
// backoffs are capped, so this cannot keep a hung attempt alive.
const publishBeat = time.Second

// beatWhile heartbeats prog every publishBeat until the returned function is
// called.
func beatWhile(ctx context.Context, prog Progress) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(publishBeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx, prog)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// failure returns the activity error for err if err cannot be retried within
// the attempt, or nil.
func failure(err error) error {
	switch {
	case errors.Is(err, feed.ErrCursorExpired):
		return temporal.NewNonRetryableApplicationError(
			"the feed no longer retains the changes after the sync's cursor; resuming would skip them. "+
				"Send a resync signal with the cursor to resume from (\"\" = the oldest retained change)",
			ErrTypeCursorExpired, err)
	case errors.Is(err, feed.ErrBadCursor):
		return temporal.NewNonRetryableApplicationError(
			"the feed does not recognise the sync's cursor; send a resync signal", ErrTypeBadCursor, err)
	case errors.Is(err, publisher.ErrRejected):
		// Kafka refuses a record for good (too large, say): fail the attempt so
		// it is visible in Temporal; the retry policy retries it, never skips.
		return temporal.NewApplicationError("Kafka rejected a change", "Rejected", err)
	case errors.Is(err, publisher.ErrFenced):
		return temporal.NewApplicationError("another sync attempt took over the Kafka producer", ErrTypeFenced, err)
	case feed.Permanent(err):
		// A 4xx that retrying will not fix (a misconfigured URL, say): fail the
		// attempt so it is visible in Temporal; the retry policy retries it.
		return temporal.NewApplicationError("external rejected the poll", "FeedRejected", err)
	}
	return nil
}

// sleep waits d, or less if the worker stops or ctx ends, heartbeating prog
// meanwhile (a backoff may be longer than the heartbeat timeout); it reports
// whether it waited the whole time.
func sleep(ctx context.Context, stop <-chan struct{}, d time.Duration, prog Progress) bool {
	stopBeating := beatWhile(ctx, prog)
	defer stopBeating()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
	case <-ctx.Done():
	}
	return false
}

// DeadLetterTopic is the sync's dead-letter topic, external-feed.dlq: a
// change it cannot publish goes there, in its page's transaction.
var DeadLetterTopic = change.DeadLetterTopic(change.FeedSource)

// Dead-letter bounds.
const (
	// maxDeadLetterBytes bounds a dead letter's value: a change is at most
	// feed.MaxChangeBytes, but a Kafka record at most 1 MB (the brokers'
	// and librdkafka's default), and a record Kafka refuses would fail its
	// page again and again. A longer change is cut, and says so
	// (change.HeaderTruncatedFrom).
	maxDeadLetterBytes = 512 << 10
	// maxDeadLetterKindBytes bounds the kind header of a dead letter, which
	// is whatever the feed sent.
	maxDeadLetterKindBytes = 64
	// maxLoggedTextBytes bounds a kind or chat ID a log line quotes.
	maxLoggedTextBytes = 64
)

// Source says where a page of changes came from and who publishes it, for
// the records' tracing and dead-letter headers.
type Source struct {
	Worker  string // the publishing worker's identity
	Attempt string // the activity attempt: workflow run ID/activity ID#attempt
	Cursor  string // the cursor the page was polled after
}

// DeadLetter is a change of a page that could not be published: it went to
// DeadLetterTopic instead.
type DeadLetter struct {
	Index  int       // its position in the page, from 0
	Kind   feed.Kind // as the feed sent it, if it could be read
	ChatID string    // as the feed sent it, if it could be read
	Bytes  int       // the size of its JSON
	Reason error
}

// Records turns a page of feed changes into Kafka records keyed by chat ID,
// in order: message changes to change.TopicMessages, chat lifecycle to
// change.TopicChats, each checked with change's Validate, with tracing
// headers naming src's worker and attempt. A change that cannot be
// published (malformed in the feed, or invalid as a change record) becomes
// a record of DeadLetterTopic in its place instead: the change's JSON as
// the feed sent it, keyed by its chat ID when that is short enough, with
// the reason and src's cursor in its headers; it is also returned among
// the dead letters.
func Records(changes []feed.Change, src Source) ([]publisher.Record, []DeadLetter) {
	recs := make([]publisher.Record, 0, len(changes))
	var dead []DeadLetter
	for i, c := range changes {
		rec, err := record(c, src)
		if err != nil {
			dead = append(dead, DeadLetter{Index: i, Kind: c.Kind, ChatID: c.ChatID, Bytes: len(c.Raw), Reason: err})
			rec = deadLetterRecord(c, i, err, src)
		}
		recs = append(recs, rec)
	}
	return recs, dead
}

// record returns the change record of c, or why there is none.
func record(c feed.Change, src Source) (publisher.Record, error) {
	if c.Malformed != nil {
		return publisher.Record{}, c.Malformed
	}
	var (
		topic string
		value any
		err   error
	)
	switch c.Kind {
	case feed.KindChatCreated, feed.KindChatDeleted:
		typ := change.ChatNew
		if c.Kind == feed.KindChatDeleted {
			typ = change.ChatDelete
		}
		ch := change.Chat{Type: typ, ID: c.ChatID, Version: c.Version}
		topic, value, err = change.TopicChats, ch, ch.Validate()
	case feed.KindMessageCreated, feed.KindMessageUpdated, feed.KindMessageDeleted:
		if c.Message == nil { // the feed client marks this Malformed
			return publisher.Record{}, fmt.Errorf("%w: %s without its message", change.ErrInvalid, c.Kind)
		}
		m := change.Message{
			ID: c.Message.ID, ChatID: c.ChatID, Content: c.Message.Content,
			CreatedAt: c.Message.CreatedAt, UpdatedAt: c.Message.UpdatedAt, IsDeleted: c.Message.IsDeleted,
			Version: c.Version,
		}
		topic, value, err = change.TopicMessages, m, m.Validate()
	default: // the feed client lets no other kind through unmarked
		err = fmt.Errorf("unknown kind %q", shortText(string(c.Kind)))
	}
	if err != nil {
		return publisher.Record{}, err
	}
	b, err := json.Marshal(value)
	if err != nil { // a timestamp beyond year 9999, say
		return publisher.Record{}, fmt.Errorf("%w: encode %s change: %w", change.ErrInvalid, c.Kind, err)
	}
	return publisher.Record{
		Topic: topic,
		Key:   []byte(c.ChatID),
		Value: b,
		Headers: []publisher.Header{
			{Key: change.HeaderKind, Value: []byte(c.Kind)},
			{Key: change.HeaderVersion, Value: change.FormatVersion(c.Version)},
			{Key: change.HeaderWorker, Value: []byte(src.Worker)},
			{Key: change.HeaderAttempt, Value: []byte(src.Attempt)},
		},
	}, nil
}

// deadLetterRecord is the DeadLetterTopic record of c, the change at index i
// of a page from src, which could not be published for reason.
func deadLetterRecord(c feed.Change, i int, reason error, src Source) publisher.Record {
	value := c.Raw
	headers := []publisher.Header{
		{Key: change.HeaderError, Value: []byte(reason.Error())},
		{Key: change.HeaderSourceCursor, Value: []byte(src.Cursor)},
		{Key: change.HeaderSourceIndex, Value: strconv.AppendInt(nil, int64(i+1), 10)},
		{Key: change.HeaderKind, Value: []byte(truncate(string(c.Kind), maxDeadLetterKindBytes))},
		{Key: change.HeaderWorker, Value: []byte(src.Worker)},
		{Key: change.HeaderAttempt, Value: []byte(src.Attempt)},
	}
	if len(value) > maxDeadLetterBytes {
		value = value[:maxDeadLetterBytes]
		headers = append(headers, publisher.Header{Key: change.HeaderTruncatedFrom, Value: strconv.AppendInt(nil, int64(len(c.Raw)), 10)})
	}
	var key []byte // no key: any partition
	if c.ChatID != "" && len(c.ChatID) <= change.MaxIDBytes {
		key = []byte(c.ChatID) // with the chat's other dead letters
	}
	return publisher.Record{Topic: DeadLetterTopic, Key: key, Value: value, Headers: headers}
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string { return s[:min(len(s), n)] }

// shortText makes text from the feed fit for a log line: at most
// maxLoggedTextBytes, quoted (it may hold anything).
func shortText(s string) string {
	if len(s) > maxLoggedTextBytes {
		return strconv.Quote(s[:maxLoggedTextBytes]) + "…"
	}
	return strconv.Quote(s)
}
