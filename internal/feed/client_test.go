package feed_test

// Tests against hand-made responses: the edge cases the real service does not
// produce on demand.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/internal/feed"
)

// serve answers every request with handler.
func serve(t *testing.T, handler http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return srv
}

// answer serves status, headers (name, value pairs) and body.
func answer(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func poll(t *testing.T, base string) (feed.Page, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return newClient(t, base).Poll(ctx, "c1", 10, 0)
}

func TestNewValidatesBaseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://localhost:8080", true},
		{"https://external.example.com/", true},
		{"http://10.0.0.1:80/prefix", true},
		{"", false},
		{"localhost:8080", false},
		{"ftp://external.example.com", false},
		{"http://", false},
		{"http:///api", false},
		{"http://user:secret@external.example.com", false},
		{"http://external.example.com?x=1", false},
		{"http://external.example.com/#top", false},
		{"http://exa mple.com", false},
	} {
		c, err := feed.New(tc.url, feed.Options{})
		if (err == nil) != tc.ok || (c != nil) != tc.ok {
			t.Errorf("New(%q) = %v, %v; want ok %t", tc.url, c, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%q) error shows the password: %v", tc.url, err)
		}
	}
}

// countingTransport counts the requests sent through it.
type countingTransport struct{ n atomic.Int64 }

func (ct *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ct.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

func TestPollSendsTheFeedRequest(t *testing.T) {
	t.Parallel()
	reqs := make(chan *http.Request, 2)
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		reqs <- r
		answer(http.StatusOK, `{"changes":[],"cursor":"same"}`)(w, r)
	})
	transport := &countingTransport{}
	c, err := feed.New(srv.URL+"/prefix/", feed.Options{HTTPClient: &http.Client{Transport: transport}, UserAgent: "sync/1.0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	if _, err := c.Poll(ctx, "a+b/c=", 250, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	r := <-reqs
	q := r.URL.Query()
	if r.Method != http.MethodGet || r.URL.Path != "/prefix/api/changes" ||
		q.Get("cursor") != "a+b/c=" || q.Get("limit") != "250" || q.Get("wait") != "1.5s" {
		t.Errorf("request %s %s, want GET /prefix/api/changes?cursor=a%%2Bb%%2Fc%%3D&limit=250&wait=1.5s", r.Method, r.URL)
	}
	if r.Header.Get("User-Agent") != "sync/1.0" || r.Header.Get("Accept") != "application/json" {
		t.Errorf("headers %v, want User-Agent sync/1.0 and Accept application/json", r.Header)
	}

	// The start of the feed with the service's defaults: no parameters.
	if _, err := c.Poll(ctx, "", 0, 0); err != nil {
		t.Fatal(err)
	}
	if r := <-reqs; r.URL.RawQuery != "" {
		t.Errorf("poll with defaults sent query %q, want none", r.URL.RawQuery)
	}
	if n := transport.n.Load(); n != 2 {
		t.Errorf("the given HTTP client sent %d requests, want 2", n)
	}
}

func TestPollAcceptsValidEdgePages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		changes    int
		cursor     string
	}{
		{"empty feed from the start", `{"changes":[],"cursor":""}`, 0, ""},
		{"unknown fields", `{"changes":[{"kind":"chat.created","chatId":"c","version":1,"at":"2025-01-02T03:04:05Z","new":1}],"cursor":"n","next":true}`, 1, "n"},
		{"every kind", `{"changes":[` +
			`{"kind":"chat.created","chatId":"c","version":1,"at":"2025-01-02T03:04:05Z"},` +
			`{"kind":"message.created","chatId":"c","message":{"id":"m","chatId":"c","content":"hi","version":2},"version":2,"at":"2025-01-02T03:04:05Z"},` +
			`{"kind":"message.updated","chatId":"c","message":{"id":"m","chatId":"c","content":"ho","version":3},"version":3,"at":"2025-01-02T03:04:05Z"},` +
			`{"kind":"message.deleted","chatId":"c","message":{"id":"m","chatId":"c","isDeleted":true,"version":4},"version":4,"at":"2025-01-02T03:04:05Z"},` +
			`{"kind":"chat.deleted","chatId":"c","message":null,"version":5,"at":"2025-01-02T03:04:05Z"}],"cursor":"k"}`, 5, "k"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			page, err := poll(t, serve(t, answer(http.StatusOK, tc.body)).URL)
			if err != nil || len(page.Changes) != tc.changes || page.Cursor != tc.cursor {
				t.Fatalf("Poll = %+v, %v; want %d changes and cursor %q", page, err, tc.changes, tc.cursor)
			}
		})
	}
}

func TestPollRejectsMalformedPages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, body string }{
		{"not JSON", `<html>proxy error</html>`},
		{"empty body", ``},
		{"trailing data", `{"changes":[],"cursor":""} {}`},
		{"no changes", `{"cursor":"n"}`},
		{"null changes", `{"changes":null,"cursor":"n"}`},
		{"changes not an array", `{"changes":{},"cursor":"n"}`},
		{"no cursor", `{"changes":[]}`},
		{"changes without a cursor", `{"changes":[{"kind":"chat.created","chatId":"c","version":1,"at":"2025-01-02T03:04:05Z"}],"cursor":""}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := poll(t, serve(t, answer(http.StatusOK, tc.body)).URL)
			if !errors.Is(err, feed.ErrMalformed) {
				t.Fatalf("Poll(%s) = %+v, %v; want ErrMalformed", tc.body, p, err)
			}
			if feed.Permanent(err) || !strings.HasPrefix(err.Error(), "poll feed: ") {
				t.Errorf("err = %q (permanent %t), want a retryable poll feed error", err, feed.Permanent(err))
			}
		})
	}
}

// TestPollMarksBadChanges: a change that breaks the feed's contract is
// returned in its place, marked, with its raw bytes; the good changes
// around it and the page's cursor are returned as usual.
func TestPollMarksBadChanges(t *testing.T) {
	t.Parallel()
	const at = `"at":"2025-01-02T03:04:05Z"`
	msg := func(id, chat string) string {
		return `"message":{"id":"` + id + `","chatId":"` + chat + `","version":2}`
	}
	good := `{"kind":"chat.created","chatId":"c","version":1,` + at + `}`
	huge := `{"kind":"message.created","chatId":"c",` + msg("m", "c") + `,"version":2,` + at +
		`,"pad":"` + strings.Repeat("x", feed.MaxChangeBytes) + `"}`
	for _, tc := range []struct{ name, change, kind, chat string }{
		{"not UTF-8", `{"kind":"message.created","chatId":"c","message":{"id":"m","chatId":"c","content":"bad ` + "\xff\xfe" + `","version":2},"version":2,` + at + `}`, "message.created", "c"},
		{"cut UTF-8 in an ID", `{"kind":"chat.created","chatId":"c` + "\xe2\x82" + `","version":1,` + at + `}`, "chat.created", "c\uFFFD\uFFFD"},
		{"wrong type", `{"kind":"chat.created","chatId":"c","version":"1",` + at + `}`, "chat.created", "c"},
		{"not an object", `[1,2]`, "", ""},
		{"unknown kind", `{"kind":"chat.renamed","chatId":"c","version":1,` + at + `}`, "chat.renamed", "c"},
		{"empty kind", `{"chatId":"c","version":1,` + at + `}`, "", "c"},
		{"no chat ID", `{"kind":"chat.created","version":1,` + at + `}`, "chat.created", ""},
		{"zero version", `{"kind":"chat.created","chatId":"c","version":0,` + at + `}`, "chat.created", "c"},
		{"negative version", `{"kind":"chat.created","chatId":"c","version":-3,` + at + `}`, "chat.created", "c"},
		{"chat change with a message", `{"kind":"chat.deleted","chatId":"c",` + msg("m", "c") + `,"version":2,` + at + `}`, "chat.deleted", "c"},
		{"message change without a message", `{"kind":"message.updated","chatId":"c","version":2,` + at + `}`, "message.updated", "c"},
		{"message without an ID", `{"kind":"message.created","chatId":"c",` + msg("", "c") + `,"version":2,` + at + `}`, "message.created", "c"},
		{"message of another chat", `{"kind":"message.deleted","chatId":"c",` + msg("m", "other") + `,"version":2,` + at + `}`, "message.deleted", "c"},
		{"larger than MaxChangeBytes", huge, "message.created", "c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := `{"changes":[` + good + `,` + tc.change + `,` + good + `],"cursor":"n"}`
			p, err := poll(t, serve(t, answer(http.StatusOK, body)).URL)
			if err != nil || len(p.Changes) != 3 || p.Cursor != "n" {
				t.Fatalf("Poll = %d changes, cursor %q, %v; want 3 changes and cursor n", len(p.Changes), p.Cursor, err)
			}
			for _, i := range []int{0, 2} {
				if c := p.Changes[i]; c.Malformed != nil || string(c.Raw) != good || c.Kind != feed.KindChatCreated {
					t.Errorf("good change %d = %+v (malformed: %v)", i, c, c.Malformed)
				}
			}
			bad := p.Changes[1]
			if !errors.Is(bad.Malformed, feed.ErrBadChange) {
				t.Fatalf("bad change's Malformed = %v, want ErrBadChange; raw %q", bad.Malformed, bad.Raw)
			}
			if string(bad.Raw) != tc.change {
				t.Errorf("bad change's Raw = %.80q, want the change as sent", bad.Raw)
			}
			if string(bad.Kind) != tc.kind || bad.ChatID != tc.chat {
				t.Errorf("bad change read as kind %q of chat %q, want %q of %q", bad.Kind, bad.ChatID, tc.kind, tc.chat)
			}
			if len(bad.Malformed.Error()) > 200 || strings.Contains(bad.Malformed.Error(), "bad ") {
				t.Errorf("Malformed = %.300q: too long, or quotes the content", bad.Malformed)
			}
			t.Logf("%s: %v", tc.name, bad.Malformed)
		})
	}
}

// cut sends a 200 page's headers and half its body, then closes the
// connection, as a dying proxy would; withLength says whether the headers
// announce the whole body's length.
func cut(withLength bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		body := `{"changes":[{"kind":"chat.created","chatId":"c","version":1,"at":"2025-01-02T03:04:05Z"}],"cursor":"n"}`
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		defer conn.Close()
		fmt.Fprint(rw, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n")
		if withLength {
			fmt.Fprintf(rw, "Content-Length: %d\r\n", len(body))
		}
		fmt.Fprint(rw, "\r\n"+body[:len(body)/2])
		_ = rw.Flush()
	}
}

func TestPollCutBodyIsRetryable(t *testing.T) {
	t.Parallel()
	for _, withLength := range []bool{true, false} {
		t.Run("content length "+strconv.FormatBool(withLength), func(t *testing.T) {
			t.Parallel()
			page, err := poll(t, serve(t, cut(withLength)).URL)
			if err == nil {
				t.Fatalf("Poll = %+v, want an error", page)
			}
			var se *feed.StatusError
			if feed.Permanent(err) || errors.As(err, &se) || !strings.HasPrefix(err.Error(), "poll feed: ") {
				t.Errorf("err = %q (permanent %t), want a retryable poll feed error", err, feed.Permanent(err))
			}
		})
	}
}

// hugePage serves a page of changes whose body is larger than
// feed.MaxPageBytes, and counts the limits it was asked for.
func hugePage(limits *[]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		*limits = append(*limits, r.URL.Query().Get("limit"))
		w.Header().Set("Content-Type", "application/json")
		// Valid JSON if it were read to the end: only the size is wrong.
		_, _ = io.WriteString(w, `{"changes":[],"cursor":"n"`)
		spaces := []byte(strings.Repeat(" ", 1<<20))
		for range feed.MaxPageBytes>>20 + 1 {
			if _, err := w.Write(spaces); err != nil {
				return // the client gave up, as it should
			}
		}
		_, _ = io.WriteString(w, `}`)
	}
}

func TestPollRejectsHugeBody(t *testing.T) {
	t.Parallel()
	var limits []string
	srv := serve(t, hugePage(&limits))
	page, err := poll(t, srv.URL)
	if !errors.Is(err, feed.ErrPageTooLarge) || feed.Permanent(err) {
		t.Fatalf("Poll of 10 changes in a %d MiB body = %d changes, %v; want a retryable ErrPageTooLarge", feed.MaxPageBytes>>20+1, len(page.Changes), err)
	}
	if len(err.Error()) > 200 {
		t.Errorf("error is %d bytes long: %.300s", len(err.Error()), err)
	}
	// Fewer changes cannot be asked for than one: that page is not the
	// feed talking, and is retried as any bad answer.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	page, err = newClient(t, srv.URL).Poll(ctx, "c1", 1, 0)
	if err == nil || errors.Is(err, feed.ErrPageTooLarge) || feed.Permanent(err) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Poll of one change in a huge body = %d changes, %v; want a retryable too-large error other than ErrPageTooLarge", len(page.Changes), err)
	}
}

func TestPollErrorAnswers(t *testing.T) {
	t.Parallel()
	inAnHour := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	anHourAgo := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		name       string
		handler    http.HandlerFunc
		is         error // the sentinel the error wraps, if any
		status     int   // the StatusError's status, when is is nil
		message    string
		permanent  bool
		retryAfter time.Duration // 0: RetryAfter reports false
	}{
		{"bad cursor", answer(400, `{"error":"malformed cursor","code":"bad_cursor"}`), feed.ErrBadCursor, 0, "", true, 0},
		{"cursor expired", answer(410, `{"error":"cursor expired","code":"cursor_expired"}`), feed.ErrCursorExpired, 0, "", true, 0},
		{"400 of another code", answer(400, `{"error":"limit must be an integer","code":"bad_limit"}`), nil, 400, "limit must be an integer", true, 0},
		{"410 without the cursor code", answer(410, `{"error":"gone"}`), nil, 410, "gone", true, 0},
		{"404 from a proxy", answer(404, "<html>\n<b>Not   Found</b>\n</html>", "Content-Type", "text/html"), nil, 404, "<html> <b>Not Found</b> </html>", true, 0},
		{"401", answer(401, `{"error":"who are you"}`), nil, 401, "who are you", true, 0},
		{"408", answer(408, ``), nil, 408, "", false, 0},
		{"425", answer(425, ``), nil, 425, "", false, 0},
		{"429 in seconds", answer(429, `{"error":"slow down"}`, "Retry-After", "120"), nil, 429, "slow down", false, 2 * time.Minute},
		{"429 for too long", answer(429, `{"error":"slow down"}`, "Retry-After", "86400"), nil, 429, "slow down", false, 5 * time.Minute},
		{"429 with a garbage Retry-After", answer(429, `{"error":"slow down"}`, "Retry-After", "soon"), nil, 429, "slow down", false, 0},
		{"429 without Retry-After", answer(429, `{"error":"slow down"}`), nil, 429, "slow down", false, 0},
		{"503 until a date", answer(503, `{"error":"shutting down; retry"}`, "Retry-After", inAnHour), nil, 503, "shutting down; retry", false, 5 * time.Minute},
		{"503 until a past date", answer(503, `{"error":"shutting down; retry"}`, "Retry-After", anHourAgo), nil, 503, "shutting down; retry", false, 0},
		{"500 with Retry-After", answer(500, `{"error":"internal error"}`, "Retry-After", "3"), nil, 500, "internal error", false, 0},
		{"502 empty", answer(502, ``), nil, 502, "", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := poll(t, serve(t, tc.handler).URL)
			if err == nil {
				t.Fatal("Poll succeeded, want an error")
			}
			var se *feed.StatusError
			switch {
			case tc.is != nil && !errors.Is(err, tc.is):
				t.Errorf("err = %v, want %v", err, tc.is)
			case tc.is != nil && errors.As(err, &se):
				t.Errorf("err = %v is also a StatusError", err)
			case tc.is == nil && (!errors.As(err, &se) || se.StatusCode != tc.status || se.Message != tc.message):
				t.Errorf("err = %#v, want a StatusError %d with message %q", err, tc.status, tc.message)
			}
			if got := feed.Permanent(err); got != tc.permanent {
				t.Errorf("Permanent(%v) = %t, want %t", err, got, tc.permanent)
			}
			d, ok := feed.RetryAfter(err)
			if ok != (tc.retryAfter > 0) || d != tc.retryAfter {
				t.Errorf("RetryAfter(%v) = %s, %t; want %s", err, d, ok, tc.retryAfter)
			}
			if !strings.HasPrefix(err.Error(), "poll feed") {
				t.Errorf("err = %q, want it to say what failed", err)
			}
		})
	}
}

func TestPollErrorShowsOnlyTheStartOfALongBody(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 50_000) // 100 kB: more than is ever read of an error
	for name, body := range map[string]string{
		"text":       long,
		"error JSON": `{"error":"` + long[:20_000] + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := poll(t, serve(t, answer(http.StatusBadGateway, body)).URL)
			var se *feed.StatusError
			if !errors.As(err, &se) || se.StatusCode != http.StatusBadGateway {
				t.Fatalf("err = %.300v, want a 502 StatusError", err)
			}
			if len(se.Message) > 210 || !strings.HasPrefix(se.Message, "éé") {
				t.Errorf("message is %d bytes: %.300q; want the start of the body, at most about 200 bytes", len(se.Message), se.Message)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes: %.400q", len(err.Error()), err)
			}
		})
	}
}

// hang answers nothing until its request ends, and tells when it started.
func hang(started chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	}
}

func TestPollCallerContextEnds(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	c := newClient(t, serve(t, hang(started)).URL)
	guard, stopGuard := context.WithTimeout(context.Background(), testTimeout)
	defer stopGuard()

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(guard)
		go func() {
			<-started
			cancel()
		}()
		_, err := c.Poll(ctx, "", 10, 20*time.Second)
		if !errors.Is(err, context.Canceled) || guard.Err() != nil || err.Error() != "poll feed: context canceled" {
			t.Fatalf("err = %v, want the caller's cancellation, wrapped as such", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(guard, 100*time.Millisecond)
		defer cancel()
		_, err := c.Poll(ctx, "", 10, 20*time.Second)
		if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() == nil || guard.Err() != nil {
			t.Fatalf("err = %v, want the caller's deadline, wrapped", err)
		}
	})
}

func TestPollGivesUpAfterWaitPlusMargin(t *testing.T) {
	t.Parallel()
	c := newClient(t, serve(t, hang(nil)).URL)
	// The guard is far beyond the poll's own deadline (its wait, 0, plus the
	// margin): only that deadline can end the poll.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, err := c.Poll(ctx, "", 10, 0)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("Poll = %v with the caller's context ended (%v); want the poll's own deadline first", err, ctx.Err())
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("err = %v, want a timeout", err)
	}
	if feed.Permanent(err) || errors.Is(err, context.Canceled) {
		t.Errorf("err = %v (permanent %t), want a retryable timeout", err, feed.Permanent(err))
	}
}

func TestStatusErrorReadsWell(t *testing.T) {
	t.Parallel()
	err := &feed.StatusError{StatusCode: 429, Code: "slow", Message: "slow down", RetryAfter: 2 * time.Second}
	if got, want := err.Error(), "external answered 429 Too Many Requests: slow down [slow] (retry after 2s)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := (&feed.StatusError{StatusCode: 502}).Error(), "external answered 502 Bad Gateway"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
