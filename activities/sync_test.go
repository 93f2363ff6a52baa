package activities_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/chatpoc/chat-poc/activities"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/feed"
	"github.com/chatpoc/chat-poc/internal/publisher"
)

// scriptedFeed answers polls from a script: each entry is one poll's page or
// error; once the script is exhausted it answers empty pages.
type scriptedFeed struct {
	mu      sync.Mutex
	script  []func(cursor string) (feed.Page, error)
	cursors []string // the cursor of every poll
	limits  []int    // the limit of every poll
}

func (f *scriptedFeed) Poll(_ context.Context, cursor string, limit int, _ time.Duration) (feed.Page, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cursors = append(f.cursors, cursor)
	f.limits = append(f.limits, limit)
	if len(f.script) == 0 {
		return feed.Page{Changes: nil, Cursor: cursor}, nil
	}
	next := f.script[0]
	f.script = f.script[1:]
	return next(cursor)
}

func (f *scriptedFeed) polledAfter() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cursors...)
}

func page(next string, changes ...feed.Change) func(string) (feed.Page, error) {
	return func(string) (feed.Page, error) { return feed.Page{Changes: changes, Cursor: next}, nil }
}

func fail(err error) func(string) (feed.Page, error) {
	return func(string) (feed.Page, error) { return feed.Page{}, err }
}

// recordingPublisher keeps what it was asked to publish; errs are returned
// by the first calls, one each.
type recordingPublisher struct {
	mu      sync.Mutex
	errs    []error
	batches [][]publisher.Record
}

func (p *recordingPublisher) Publish(_ context.Context, recs []publisher.Record) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.errs) > 0 {
		err := p.errs[0]
		p.errs = p.errs[1:]
		if err != nil {
			return "", err
		}
	}
	p.batches = append(p.batches, recs)
	return "a", nil
}

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func msgChange(kind feed.Kind, chat, id string, v int64) feed.Change {
	return feed.Change{Kind: kind, ChatID: chat, Version: v, At: t0, Message: &feed.Message{
		ID: id, ChatID: chat, Content: "hi " + id, CreatedAt: t0, UpdatedAt: t0.Add(time.Duration(v)),
		IsDeleted: kind == feed.KindMessageDeleted, Version: v,
	}}
}

func runSync(t *testing.T, f activities.Feed, p activities.Publisher, hb *activities.Progress, in activities.SyncParams) (activities.Progress, error) {
	t.Helper()
	return runSyncWithMetrics(t, f, p, nil, hb, in)
}

// runSyncWithMetrics runs the activity, counting in m (none when nil).
func runSyncWithMetrics(t *testing.T, f activities.Feed, p activities.Publisher, m *activities.Metrics, hb *activities.Progress, in activities.SyncParams) (activities.Progress, error) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(activities.New(f, p, "worker-1", m, slog.New(slog.NewTextHandler(io.Discard, nil))))
	if hb != nil {
		env.SetHeartbeatDetails(*hb)
	}
	v, err := env.ExecuteActivity((&activities.Activities{}).Sync, in)
	var prog activities.Progress
	if err == nil {
		if gerr := v.Get(&prog); gerr != nil {
			t.Fatal(gerr)
		}
	}
	return prog, err
}

func TestSyncPublishesPagesAndMovesTheCheckpointAfterEach(t *testing.T) {
	t.Parallel()
	f := &scriptedFeed{script: []func(string) (feed.Page, error){
		page("p1", feed.Change{Kind: feed.KindChatCreated, ChatID: "c1", Version: 1, At: t0},
			msgChange(feed.KindMessageCreated, "c1", "m1", 2)),
		page("p2", msgChange(feed.KindMessageUpdated, "c1", "m1", 3)),
	}}
	p := &recordingPublisher{}
	prog, err := runSync(t, f, p, nil, activities.SyncParams{Cursor: "p0", ReportAfter: 300 * time.Millisecond, PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if prog.Cursor != "p2" || prog.Changes != 3 || prog.Polls < 3 || prog.Worker != "worker-1" || prog.Cluster != "a" {
		t.Errorf("progress = %+v, want cursor p2, 3 changes, at least 3 polls, worker-1 on a", prog)
	}
	if got := f.polledAfter(); len(got) < 3 || got[0] != "p0" || got[1] != "p1" || got[2] != "p2" {
		t.Errorf("polled after %v, want p0, p1, p2, ...", got)
	}
	if len(p.batches) != 2 || len(p.batches[0]) != 2 || len(p.batches[1]) != 1 {
		t.Fatalf("published batches %d, want one per page (2 then 1 records)", len(p.batches))
	}
}

func TestSyncRetriesAFailedPublishFromTheSameCursor(t *testing.T) {
	t.Parallel()
	c := msgChange(feed.KindMessageCreated, "c1", "m1", 2)
	f := &scriptedFeed{script: []func(string) (feed.Page, error){page("p1", c), page("p1", c)}}
	p := &recordingPublisher{errs: []error{errors.New("kafka down")}}
	prog, err := runSync(t, f, p, nil, activities.SyncParams{Cursor: "p0", ReportAfter: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.polledAfter(); len(got) < 2 || got[0] != "p0" || got[1] != "p0" {
		t.Errorf("polled after %v: the page whose publish failed must be polled again from p0", got)
	}
	if prog.Cursor != "p1" || len(p.batches) != 1 || prog.LastError != "" {
		t.Errorf("progress %+v, %d batches; want cursor p1 after one successful publish and no error left", prog, len(p.batches))
	}
}

func TestSyncResumesFromTheLastHeartbeat(t *testing.T) {
	t.Parallel()
	f := &scriptedFeed{}
	prog, err := runSync(t, f, &recordingPublisher{}, &activities.Progress{Cursor: "hb", Changes: 7},
		activities.SyncParams{Cursor: "input", ReportAfter: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.polledAfter(); len(got) == 0 || got[0] != "hb" {
		t.Errorf("first poll after %v, want the heartbeat's cursor hb", got)
	}
	if prog.Changes != 7 || prog.Cursor != "hb" {
		t.Errorf("progress %+v, want the heartbeat's counters carried on", prog)
	}
}

func TestSyncFailureTypes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		feedErr      error
		pubErr       error
		wantType     string
		nonRetryable bool
	}{
		{name: "expired cursor stops the sync", feedErr: fmt.Errorf("poll: %w", feed.ErrCursorExpired), wantType: activities.ErrTypeCursorExpired, nonRetryable: true},
		{name: "unknown cursor stops the sync", feedErr: fmt.Errorf("poll: %w", feed.ErrBadCursor), wantType: activities.ErrTypeBadCursor, nonRetryable: true},
		{name: "fenced producer ends the attempt", pubErr: fmt.Errorf("publish: %w", publisher.ErrFenced), wantType: activities.ErrTypeFenced},
		{name: "rejected record fails the attempt visibly", pubErr: fmt.Errorf("publish: %w", publisher.ErrRejected), wantType: "Rejected"},
		{name: "4xx from external fails the attempt visibly", feedErr: &feed.StatusError{StatusCode: 404}, wantType: "FeedRejected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &scriptedFeed{script: []func(string) (feed.Page, error){page("p1", msgChange(feed.KindMessageCreated, "c", "m", 1))}}
			if tc.feedErr != nil {
				f.script = []func(string) (feed.Page, error){fail(tc.feedErr)}
			}
			_, err := runSync(t, f, &recordingPublisher{errs: []error{tc.pubErr}}, nil,
				activities.SyncParams{Cursor: "p0", ReportAfter: time.Minute})
			var app *temporal.ApplicationError
			if !errors.As(err, &app) {
				t.Fatalf("err = %v, want an application error", err)
			}
			if app.Type() != tc.wantType || app.NonRetryable() != tc.nonRetryable {
				t.Errorf("error type %q non-retryable %v, want %q %v", app.Type(), app.NonRetryable(), tc.wantType, tc.nonRetryable)
			}
		})
	}
}

func TestSyncKeepsRetryingTransientFeedErrors(t *testing.T) {
	t.Parallel()
	f := &scriptedFeed{script: []func(string) (feed.Page, error){
		fail(&feed.StatusError{StatusCode: 500}),
		fail(fmt.Errorf("poll: %w", feed.ErrMalformed)),
		page("p1", msgChange(feed.KindMessageCreated, "c", "m", 1)),
	}}
	p := &recordingPublisher{}
	prog, err := runSync(t, f, p, nil, activities.SyncParams{Cursor: "p0", ReportAfter: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if prog.Cursor != "p1" || len(p.batches) != 1 {
		t.Errorf("progress %+v after two transient errors, want the page published at cursor p1", prog)
	}
}

func TestRecordsMapFeedChangesToTopicsKeyedByChat(t *testing.T) {
	t.Parallel()
	changes := []feed.Change{
		{Kind: feed.KindChatCreated, ChatID: "c1", Version: 1, At: t0},
		msgChange(feed.KindMessageCreated, "c1", "m1", 2),
		msgChange(feed.KindMessageDeleted, "c1", "m1", 3),
		{Kind: feed.KindChatDeleted, ChatID: "c1", Version: 4, At: t0},
	}
	recs, dead := activities.Records(changes, activities.Source{Worker: "w", Attempt: "run/1#1", Cursor: "p0"})
	if len(dead) != 0 {
		t.Fatalf("dead letters %+v", dead)
	}
	if len(recs) != 4 {
		t.Fatalf("%d records, want 4", len(recs))
	}
	for i, want := range []string{change.TopicChats, change.TopicMessages, change.TopicMessages, change.TopicChats} {
		if recs[i].Topic != want || string(recs[i].Key) != "c1" {
			t.Errorf("record %d: topic %s key %s, want %s keyed c1", i, recs[i].Topic, recs[i].Key, want)
		}
		hdr := map[string]string{}
		for _, h := range recs[i].Headers {
			hdr[h.Key] = string(h.Value)
		}
		if hdr[change.HeaderKind] != string(changes[i].Kind) || hdr[change.HeaderVersion] != fmt.Sprint(changes[i].Version) ||
			hdr[change.HeaderWorker] != "w" || hdr[change.HeaderAttempt] != "run/1#1" {
			t.Errorf("record %d headers %v", i, hdr)
		}
	}
	if c, err := change.DecodeChat(recs[0].Value); err != nil || c != (change.Chat{Type: change.ChatNew, ID: "c1", Version: 1}) {
		t.Errorf("chat record = %+v, %v", c, err)
	}
	if c, err := change.DecodeChat(recs[3].Value); err != nil || c.Type != change.ChatDelete || c.Version != 4 {
		t.Errorf("chat delete record = %+v, %v", c, err)
	}
	m, err := change.DecodeMessage(recs[2].Value)
	if err != nil || m.ID != "m1" || m.ChatID != "c1" || !m.IsDeleted || m.Version != 3 || !m.CreatedAt.Equal(t0) {
		t.Errorf("message record = %+v, %v", m, err)
	}
	// The original's field names, exactly.
	var raw map[string]any
	if err := json.Unmarshal(recs[1].Value, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "chatId", "content", "createdAt", "updatedAt", "isDeleted", "version"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("message record lacks %q: %s", k, recs[1].Value)
		}
	}
	if recs, _ := activities.Records([]feed.Change{{Kind: "chat.renamed", ChatID: "c", Version: 1}}, activities.Source{}); recs[0].Topic != activities.DeadLetterTopic {
		t.Errorf("an unknown kind was published to %s", recs[0].Topic)
	}
}

// poisonChanges are changes the sync must dead-letter, each with its raw
// JSON (the value of its dead letter).
func poisonChanges() map[string]feed.Change {
	withRaw := func(c feed.Change) feed.Change {
		c.Raw, _ = json.Marshal(c)
		return c
	}
	longID := msgChange(feed.KindMessageCreated, "c1", strings.Repeat("m", 10_000), 5)
	badUTF8 := msgChange(feed.KindMessageUpdated, "c1", "m2", 6)
	badUTF8.Message.Content = "bad \xff\xfe bytes"
	nul := msgChange(feed.KindMessageCreated, "c1", "m3", 7)
	nul.Message.Content = "a\x00b"
	longChat := feed.Change{Kind: feed.KindChatCreated, ChatID: strings.Repeat("c", 10_000), Version: 8, At: t0}
	slash := feed.Change{Kind: feed.KindChatDeleted, ChatID: "c/../x", Version: 9, At: t0}
	noTime := msgChange(feed.KindMessageCreated, "c1", "m4", 10)
	noTime.Message.CreatedAt = time.Time{}
	return map[string]feed.Change{
		"10 kB message ID":        withRaw(longID),
		"content not UTF-8":       withRaw(badUTF8),
		"content with a NUL":      withRaw(nul),
		"10 kB chat ID":           withRaw(longChat),
		"chat ID with a slash":    withRaw(slash),
		"message without created": withRaw(noTime),
		"malformed in the feed": {Kind: "chat.renamed", ChatID: "c1", Raw: []byte(`{"kind":"chat.renamed","chatId":"c1"}`),
			Malformed: fmt.Errorf("%w: unknown kind", feed.ErrBadChange)},
		"huge and malformed": {Kind: feed.KindMessageCreated, ChatID: "c1", Raw: []byte(`{"pad":"` + strings.Repeat("x", 2<<20) + `"}`),
			Malformed: fmt.Errorf("%w: too large", feed.ErrBadChange)},
	}
}

func headersOf(r publisher.Record) map[string]string {
	h := map[string]string{}
	for _, x := range r.Headers {
		h[x.Key] = string(x.Value)
	}
	return h
}

// TestRecordsDeadLetterPoisonChanges: a change that cannot be published
// becomes, in its place, a dead letter with its raw JSON and its reason;
// the changes around it are published as usual.
func TestRecordsDeadLetterPoisonChanges(t *testing.T) {
	t.Parallel()
	for name, poison := range poisonChanges() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			page := []feed.Change{msgChange(feed.KindMessageCreated, "c1", "before", 1), poison, msgChange(feed.KindMessageCreated, "c1", "after", 11)}
			recs, dead := activities.Records(page, activities.Source{Worker: "w", Attempt: "run/1#1", Cursor: "p0"})
			if len(recs) != 3 || len(dead) != 1 {
				t.Fatalf("%d records, %d dead letters; want 3 and 1", len(recs), len(dead))
			}
			for _, i := range []int{0, 2} {
				if recs[i].Topic != change.TopicMessages {
					t.Errorf("neighbour %d went to %s", i, recs[i].Topic)
				}
			}
			d, r := dead[0], recs[1]
			if d.Index != 1 || d.Kind != poison.Kind || d.ChatID != poison.ChatID || d.Bytes != len(poison.Raw) || d.Reason == nil {
				t.Errorf("dead letter %+v", d)
			}
			h := headersOf(r)
			if r.Topic != "external-feed.dlq" || r.Topic != activities.DeadLetterTopic {
				t.Errorf("dead letter to %q", r.Topic)
			}
			if h[change.HeaderError] != d.Reason.Error() || h[change.HeaderSourceCursor] != "p0" || h[change.HeaderSourceIndex] != "2" ||
				h[change.HeaderKind] != string(poison.Kind) || h[change.HeaderWorker] != "w" || h[change.HeaderAttempt] != "run/1#1" {
				t.Errorf("dead letter headers %v", h)
			}
			switch {
			case len(poison.Raw) > 512<<10:
				if len(r.Value) != 512<<10 || string(r.Value) != string(poison.Raw[:len(r.Value)]) || h[change.HeaderTruncatedFrom] != fmt.Sprint(len(poison.Raw)) {
					t.Errorf("value of %d bytes, truncated-from %q; want the first 512 KiB of %d", len(r.Value), h[change.HeaderTruncatedFrom], len(poison.Raw))
				}
			case string(r.Value) != string(poison.Raw) || h[change.HeaderTruncatedFrom] != "":
				t.Errorf("value %.80q, want the raw change", r.Value)
			}
			if wantKey := poison.ChatID; len(wantKey) > change.MaxIDBytes {
				if r.Key != nil {
					t.Errorf("keyed by a %d-byte chat ID", len(r.Key))
				}
			} else if string(r.Key) != wantKey {
				t.Errorf("key %q, want the chat ID %q", r.Key, wantKey)
			}
			if len(d.Reason.Error()) > 300 || strings.Contains(d.Reason.Error(), "bad \xff") {
				t.Errorf("reason %.400q: too long, or quotes the content", d.Reason)
			}
			t.Logf("reason: %v", d.Reason)
		})
	}
}

// TestSyncDeadLettersPoisonInThePageTransaction: the page's good changes
// and its dead letters are published together; the checkpoint passes them
// only then, and the dead letters are counted.
func TestSyncDeadLettersPoisonInThePageTransaction(t *testing.T) {
	t.Parallel()
	poison := poisonChanges()
	withPoison := page("p1", msgChange(feed.KindMessageCreated, "c1", "m1", 1), poison["10 kB message ID"],
		poison["content not UTF-8"], msgChange(feed.KindMessageCreated, "c1", "m9", 12))
	// The first publish fails: the page is polled again, and counted once.
	f := &scriptedFeed{script: []func(string) (feed.Page, error){withPoison, withPoison}}
	p := &recordingPublisher{errs: []error{errors.New("kafka down")}}
	reg := prometheus.NewRegistry()
	prog, err := runSyncWithMetrics(t, f, p, activities.NewMetrics(reg), nil, activities.SyncParams{Cursor: "p0", ReportAfter: time.Second, PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if prog.Cursor != "p1" || len(p.batches) != 1 {
		t.Fatalf("progress %+v, %d batches; want cursor p1 after one batch", prog, len(p.batches))
	}
	if got := f.polledAfter(); len(got) < 3 || got[0] != "p0" || got[1] != "p0" || got[2] != "p1" {
		t.Errorf("polled after %v, want p0 (publish failed), p0, p1, ...", got)
	}
	var topics []string
	for _, r := range p.batches[0] {
		topics = append(topics, r.Topic)
	}
	if want := []string{change.TopicMessages, activities.DeadLetterTopic, activities.DeadLetterTopic, change.TopicMessages}; !slices.Equal(topics, want) {
		t.Errorf("batch topics %v, want %v", topics, want)
	}
	if got := counterValue(t, reg, "sync_dead_letters_total"); got != 2 {
		t.Errorf("sync_dead_letters_total = %v, want 2 (counted once, after the commit)", got)
	}
}

// counterValue returns the value of the counter name gathered from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// TestSyncAsksForFewerChangesAfterAPageTooLarge: a page too large to read
// is asked for again at once, at the same cursor, for half as many
// changes; after a page is read the size grows back.
func TestSyncAsksForFewerChangesAfterAPageTooLarge(t *testing.T) {
	t.Parallel()
	tooLarge := fail(fmt.Errorf("poll feed: %w", feed.ErrPageTooLarge))
	f := &scriptedFeed{script: []func(string) (feed.Page, error){
		tooLarge, tooLarge, page("p1", msgChange(feed.KindMessageCreated, "c1", "m1", 1)),
		page("p2", msgChange(feed.KindMessageCreated, "c1", "m2", 2)),
	}}
	p := &recordingPublisher{}
	reg := prometheus.NewRegistry()
	prog, err := runSyncWithMetrics(t, f, p, activities.NewMetrics(reg), nil, activities.SyncParams{Cursor: "p0", ReportAfter: 300 * time.Millisecond, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	limits, cursors := f.limits[:5], f.cursors[:5]
	f.mu.Unlock()
	if want := []int{1000, 500, 250, 500, 1000}; !slices.Equal(limits, want) {
		t.Errorf("limits %v, want %v", limits, want)
	}
	if want := []string{"p0", "p0", "p0", "p1", "p2"}; !slices.Equal(cursors, want) {
		t.Errorf("cursors %v, want %v", cursors, want)
	}
	if prog.Cursor != "p2" || prog.LastError != "" {
		t.Errorf("progress %+v, want cursor p2 and no error", prog)
	}
	if got := counterValue(t, reg, "sync_pages_too_large_total"); got != 2 {
		t.Errorf("sync_pages_too_large_total = %v, want 2", got)
	}
}
