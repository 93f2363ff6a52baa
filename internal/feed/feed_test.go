package feed_test

// Tests against the real external service, run in-process over a fresh
// database of the shared test stack.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/apps/external/api"
	"github.com/chatpoc/chat-poc/apps/external/externaltest"
	"github.com/chatpoc/chat-poc/apps/external/store"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/feed"
)

// testTimeout bounds every wait of these tests, so that a broken client or
// server fails the test instead of hanging it.
const testTimeout = time.Minute

func newClient(t *testing.T, base string) *feed.Client {
	t.Helper()
	c, err := feed.New(base, feed.Options{UserAgent: "feed-test"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// call sends a request to external's REST API, checks its status and returns
// its body.
func call(t *testing.T, method, url, body string, want int) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, resp.StatusCode, data, want)
	}
	return data
}

func createChat(t *testing.T, base string) string {
	t.Helper()
	var chat struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(call(t, http.MethodPost, base+"/chats", "", http.StatusCreated), &chat); err != nil || chat.ID == "" {
		t.Fatalf("create chat: %q, %v", chat.ID, err)
	}
	return chat.ID
}

// writeMessage creates (messageID "") or edits a message and returns it as
// the REST API answered.
func writeMessage(t *testing.T, base, chatID, messageID, content string) feed.Message {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"content": content})
	var data []byte
	if messageID == "" {
		data = call(t, http.MethodPost, base+"/chat/"+chatID, string(body), http.StatusCreated)
	} else {
		data = call(t, http.MethodPut, base+"/chat/"+chatID+"/message/"+messageID, string(body), http.StatusOK)
	}
	var m feed.Message
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("decode message %s: %v", data, err)
	}
	return m
}

// collect polls from cursor in pages of limit until it has at least n
// changes, long-polling meanwhile: other test packages share the Postgres
// cluster, and their transactions may hold the feed's horizon back for a
// moment. It returns the changes and the cursor after them.
func collect(t *testing.T, c *feed.Client, cursor string, n, limit int) ([]feed.Change, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var all []feed.Change
	for len(all) < n {
		page, err := c.Poll(ctx, cursor, limit, 2*time.Second)
		if err != nil {
			t.Fatalf("poll after %q (%d of %d changes so far): %v", cursor, len(all), n, err)
		}
		if len(page.Changes) > limit {
			t.Fatalf("poll with limit %d returned %d changes", limit, len(page.Changes))
		}
		all, cursor = append(all, page.Changes...), page.Cursor
	}
	return all, cursor
}

func sameMessage(t *testing.T, what string, got *feed.Message, want feed.Message) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: no message, want %+v", what, want)
		return
	}
	if got.ID != want.ID || got.ChatID != want.ChatID || got.Content != want.Content || got.IsDeleted != want.IsDeleted ||
		got.Version != want.Version || !got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Errorf("%s: message %+v, want %+v", what, *got, want)
	}
}

func TestPollReturnsChangesInOrderAndResumes(t *testing.T) {
	t.Parallel()
	base := externaltest.NewServer(t, api.Config{}).URL
	c := newClient(t, base)

	chat := createChat(t, base)
	m1 := writeMessage(t, base, chat, "", "hello")
	m1edited := writeMessage(t, base, chat, m1.ID, "hello, edited")
	m2 := writeMessage(t, base, chat, "", "bye")
	call(t, http.MethodDelete, base+"/chat/"+chat+"/message/"+m1.ID, "", http.StatusNoContent)
	call(t, http.MethodDelete, base+"/chat/"+chat, "", http.StatusNoContent) // deletes m2 too

	all, cursor := collect(t, c, "", 7, 100)
	want := []feed.Kind{feed.KindChatCreated, feed.KindMessageCreated, feed.KindMessageUpdated, feed.KindMessageCreated,
		feed.KindMessageDeleted, feed.KindMessageDeleted, feed.KindChatDeleted}
	if len(all) != len(want) {
		t.Fatalf("feed has %d changes, want %d: %+v", len(all), len(want), all)
	}
	for i, ch := range all {
		if ch.Kind != want[i] || ch.ChatID != chat || ch.At.IsZero() {
			t.Errorf("change %d: %s of chat %s at %s, want %s of chat %s", i, ch.Kind, ch.ChatID, ch.At, want[i], chat)
		}
		if i > 0 && ch.Version <= all[i-1].Version {
			t.Errorf("change %d: version %d after %d; these writes were sequential", i, ch.Version, all[i-1].Version)
		}
		if ch.Message != nil && ch.Message.Version != ch.Version {
			t.Errorf("change %d: message version %d, change version %d", i, ch.Message.Version, ch.Version)
		}
	}
	if all[0].Message != nil || all[6].Message != nil {
		t.Errorf("chat changes carry messages: %+v, %+v", all[0].Message, all[6].Message)
	}
	sameMessage(t, "message.created", all[1].Message, m1)
	sameMessage(t, "message.updated", all[2].Message, m1edited)
	sameMessage(t, "second message.created", all[3].Message, m2)
	for i, m := range map[int]feed.Message{4: m1edited, 5: m2} {
		got := all[i].Message
		if got == nil || got.ID != m.ID || got.Content != m.Content || !got.IsDeleted || !got.CreatedAt.Equal(m.CreatedAt) {
			t.Errorf("change %d: message %+v, want %s deleted with content %q", i, got, m.ID, m.Content)
		}
	}

	// Page by page, the same changes and the same final cursor.
	paged, pagedCursor := collect(t, c, "", len(want), 2)
	if len(paged) != len(all) || pagedCursor != cursor {
		t.Fatalf("paged read: %d changes, cursor %q; one page: %d changes, cursor %q", len(paged), pagedCursor, len(all), cursor)
	}
	for i := range paged {
		if paged[i].Kind != all[i].Kind || paged[i].Version != all[i].Version {
			t.Errorf("paged change %d: %s v%d, want %s v%d", i, paged[i].Kind, paged[i].Version, all[i].Kind, all[i].Version)
		}
	}

	// Nothing after the cursor: an empty page that keeps it.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	page, err := c.Poll(ctx, cursor, 100, 0)
	if err != nil || len(page.Changes) != 0 || page.Cursor != cursor {
		t.Fatalf("poll at the head = %d changes, cursor %q, %v; want none, cursor %q", len(page.Changes), page.Cursor, err, cursor)
	}

	// The cursor resumes after the last change read, and only after it.
	chat2 := createChat(t, base)
	next, _ := collect(t, c, cursor, 1, 100)
	if len(next) != 1 || next[0].Kind != feed.KindChatCreated || next[0].ChatID != chat2 {
		t.Fatalf("after the cursor: %+v, want only chat.created of %s", next, chat2)
	}
}

// newExternal serves the external API like externaltest.NewServer, but gives
// the test its store: to Prune it, and to see its long-polls asleep.
func newExternal(t *testing.T, opts store.Options) (base string, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, stacktest.FreshDatabase(t, stacktest.Connect(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	st = store.New(pool, opts)
	t.Cleanup(st.Close)
	srv := httptest.NewServer(api.New(st, fstest.MapFS{}, api.Config{}, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv.URL, st
}

func TestPollLongPollReturnsWhenAChangeArrives(t *testing.T) {
	t.Parallel()
	base, st := newExternal(t, store.Options{})
	c := newClient(t, base)
	chat := createChat(t, base)
	_, cursor := collect(t, c, "", 1, 100) // past the chat's creation

	type result struct {
		page feed.Page
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// The longest wait the feed allows: had the write not woken it, the
		// poll would answer an empty page.
		page, err := c.Poll(context.Background(), cursor, 100, 30*time.Second)
		done <- result{page, err}
	}()
	// Write only once the poll is asleep in the feed, so that only a wake-up
	// can bring the change to it.
	timeout := time.After(testTimeout)
	for st.Waiters() == 0 {
		select {
		case <-time.After(10 * time.Millisecond):
		case r := <-done:
			t.Fatalf("the poll answered before the feed waited: %+v, %v", r.page, r.err)
		case <-timeout:
			t.Fatal("the poll never went to sleep in the feed")
		}
	}
	msg := writeMessage(t, base, chat, "", "wake up")
	var r result
	select {
	case r = <-done:
	case <-timeout:
		t.Fatal("the poll did not answer")
	}
	if r.err != nil {
		t.Fatalf("long-poll: %v", r.err)
	}
	if len(r.page.Changes) != 1 || r.page.Changes[0].Kind != feed.KindMessageCreated || r.page.Cursor == cursor {
		t.Fatalf("long-poll woken by a write answered %+v, want the message.created of %s and a new cursor", r.page, msg.ID)
	}
	sameMessage(t, "woken long-poll", r.page.Changes[0].Message, msg)
}

func TestPollCursorErrors(t *testing.T) {
	t.Parallel()
	base, st := newExternal(t, store.Options{Retention: time.Microsecond})
	c := newClient(t, base)
	chat := createChat(t, base)
	writeMessage(t, base, chat, "", "soon pruned")
	first, afterFirst := collect(t, c, "", 1, 1)
	if len(first) != 1 || first[0].Kind != feed.KindChatCreated {
		t.Fatalf("first change %+v, want chat.created", first)
	}
	collect(t, c, afterFirst, 1, 100) // the message is in the feed, so Prune may take it

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if n, err := st.Prune(ctx); err != nil || n != 2 {
		t.Fatalf("Prune = %d, %v; want both changes pruned", n, err)
	}

	for _, tc := range []struct {
		name, cursor string
		want         error
	}{
		{"expired", afterFirst, feed.ErrCursorExpired},
		{"not issued by the feed", "garbage", feed.ErrBadCursor},
	} {
		_, err := c.Poll(ctx, tc.cursor, 100, 0)
		if !errors.Is(err, tc.want) || !feed.Permanent(err) {
			t.Errorf("%s cursor: err = %v (permanent %t), want %v, permanent", tc.name, err, feed.Permanent(err), tc.want)
		}
		var se *feed.StatusError
		if errors.As(err, &se) {
			t.Errorf("%s cursor: a cursor error is not a StatusError: %+v", tc.name, se)
		}
	}
	// Restarting from the oldest retained change works.
	if page, err := c.Poll(ctx, "", 100, 0); err != nil || len(page.Changes) != 0 {
		t.Errorf("poll from the start after the prune = %+v, %v; want an empty page", page, err)
	}
}

func TestPollRejectedParametersArePermanent(t *testing.T) {
	t.Parallel()
	c := newClient(t, externaltest.NewServer(t, api.Config{}).URL)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, tc := range []struct {
		name  string
		limit int
		wait  time.Duration
	}{
		{"limit above 1000", 1001, 0},
		{"negative limit", -1, 0},
		{"wait above 30s", 100, 31 * time.Second},
	} {
		_, err := c.Poll(ctx, "", tc.limit, tc.wait)
		var se *feed.StatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusBadRequest || se.Message == "" || !feed.Permanent(err) {
			t.Errorf("%s: err = %v, want a permanent 400 StatusError with the service's message", tc.name, err)
		}
		if errors.Is(err, feed.ErrBadCursor) {
			t.Errorf("%s: %v is not a cursor error", tc.name, err)
		}
	}
}

func TestPollInjectedFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		faults api.Faults
		check  func(t *testing.T, err error)
	}{
		{"server error", api.Faults{ErrorRate: 1}, func(t *testing.T, err error) {
			var se *feed.StatusError
			if !errors.As(err, &se) || se.StatusCode != http.StatusInternalServerError || !strings.Contains(se.Message, "injected") {
				t.Errorf("err = %v, want a 500 StatusError with the service's message", err)
			}
			if _, ok := feed.RetryAfter(err); ok {
				t.Errorf("RetryAfter of a 500 is set: %v", err)
			}
		}},
		{"throttled", api.Faults{ThrottleRate: 1, RetryAfter: api.Duration(2 * time.Second)}, func(t *testing.T, err error) {
			var se *feed.StatusError
			if !errors.As(err, &se) || se.StatusCode != http.StatusTooManyRequests {
				t.Errorf("err = %v, want a 429 StatusError", err)
			}
			if d, ok := feed.RetryAfter(err); !ok || d != 2*time.Second {
				t.Errorf("RetryAfter = %s, %t; want 2s, true", d, ok)
			}
		}},
		{"connection dropped mid-body", api.Faults{DropRate: 1}, func(t *testing.T, err error) {
			var se *feed.StatusError
			if errors.As(err, &se) {
				t.Errorf("err = %v, want a transport error, not a StatusError", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, externaltest.NewServer(t, api.Config{Faults: tc.faults}).URL)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			page, err := c.Poll(ctx, "", 100, 0)
			if err == nil {
				t.Fatalf("Poll = %+v, want an error", page)
			}
			if feed.Permanent(err) || errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "poll feed: ") {
				t.Errorf("err = %q (permanent %t), want a retryable poll feed error", err, feed.Permanent(err))
			}
			tc.check(t, err)
		})
	}
}
