package feed_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/internal/feed"
)

func status(code int) error { return &feed.StatusError{StatusCode: code, Message: "m"} }

func wrap(err error) error { return fmt.Errorf("sync step: %w", fmt.Errorf("poll feed: %w", err)) }

func TestPermanent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"cursor expired", wrap(feed.ErrCursorExpired), true},
		{"bad cursor", wrap(feed.ErrBadCursor), true},
		{"400", wrap(status(http.StatusBadRequest)), true},
		{"401", status(http.StatusUnauthorized), true},
		{"403", status(http.StatusForbidden), true},
		{"404", wrap(status(http.StatusNotFound)), true},
		{"410 without the cursor code", status(http.StatusGone), true},
		{"422", status(http.StatusUnprocessableEntity), true},
		{"408 request timeout", wrap(status(http.StatusRequestTimeout)), false},
		{"425 too early", status(http.StatusTooEarly), false},
		{"429 throttled", wrap(status(http.StatusTooManyRequests)), false},
		{"500", wrap(status(http.StatusInternalServerError)), false},
		{"502", status(http.StatusBadGateway), false},
		{"503", status(http.StatusServiceUnavailable), false},
		{"304", status(http.StatusNotModified), false},
		{"malformed", wrap(fmt.Errorf("%w: unknown kind", feed.ErrMalformed)), false},
		{"cut body", wrap(io.ErrUnexpectedEOF), false},
		{"request deadline", wrap(&url.Error{Op: "Get", URL: "http://x", Err: context.DeadlineExceeded}), false},
		{"caller canceled", wrap(context.Canceled), false},
		{"network", wrap(&url.Error{Op: "Get", URL: "http://x", Err: errors.New("connection refused")}), false},
		{"nil", nil, false},
	} {
		if got := feed.Permanent(tc.err); got != tc.want {
			t.Errorf("%s: Permanent(%v) = %t, want %t", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	throttled := func(code int, d time.Duration) error { return &feed.StatusError{StatusCode: code, RetryAfter: d} }
	for _, tc := range []struct {
		name   string
		err    error
		want   time.Duration
		wantOK bool
	}{
		{"429", throttled(http.StatusTooManyRequests, 2*time.Second), 2 * time.Second, true},
		{"429 wrapped", wrap(throttled(http.StatusTooManyRequests, 3*time.Second)), 3 * time.Second, true},
		{"503", throttled(http.StatusServiceUnavailable, time.Minute), time.Minute, true},
		{"capped at 5 minutes", throttled(http.StatusTooManyRequests, time.Hour), 5 * time.Minute, true},
		{"429 without a delay", throttled(http.StatusTooManyRequests, 0), 0, false},
		{"negative delay", throttled(http.StatusServiceUnavailable, -time.Second), 0, false},
		{"500 with a delay", throttled(http.StatusInternalServerError, time.Second), 0, false},
		{"400 with a delay", throttled(http.StatusBadRequest, time.Second), 0, false},
		{"not a status", wrap(io.ErrUnexpectedEOF), 0, false},
		{"cursor expired", wrap(feed.ErrCursorExpired), 0, false},
		{"nil", nil, 0, false},
	} {
		if got, ok := feed.RetryAfter(tc.err); got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: RetryAfter(%v) = %s, %t; want %s, %t", tc.name, tc.err, got, ok, tc.want, tc.wantOK)
		}
	}
}
