package feed

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrCursorExpired reports that the feed no longer retains the changes after
// the cursor polled (410, code cursor_expired): resuming from it would skip
// changes, so retrying cannot help.
var ErrCursorExpired = errors.New("cursor expired: the feed no longer retains the changes after it")

// ErrBadCursor reports a cursor the feed did not issue (400, code
// bad_cursor); retrying cannot help.
var ErrBadCursor = errors.New("cursor not recognised by the feed")

// ErrMalformed reports a response body that is not a valid page of the feed:
// bad JSON, a body cut short, no changes array or no cursor. It is
// retryable, since a dropped connection or a confused proxy produces it too.
// (A change breaking the feed's contract in a good page is not: see
// ErrBadChange.)
var ErrMalformed = errors.New("malformed feed response")

// ErrBadChange is wrapped by Change.Malformed: one change breaks the feed's
// contract, in a page that is otherwise good. Retrying cannot help; the
// caller dead-letters the change and moves on.
var ErrBadChange = errors.New("malformed change")

// ErrPageTooLarge reports a page larger than MaxPageBytes, which was not
// read. Polling again for fewer changes can help; polling the same cannot.
var ErrPageTooLarge = errors.New("page larger than the client reads")

// The machine-readable codes of the feed's error bodies.
const (
	codeBadCursor     = "bad_cursor"
	codeCursorExpired = "cursor_expired"
)

// maxRetryAfter caps the delay a Retry-After header may ask for, so that a
// wrong header cannot park the sync for hours.
const maxRetryAfter = 5 * time.Minute

// StatusError is a non-2xx answer of the feed other than the two cursor
// errors.
type StatusError struct {
	StatusCode int
	// Code is the error body's machine-readable code, if any.
	Code string
	// Message is the error body's message, or the start of a body that is not
	// the feed's error JSON; at most about 200 bytes.
	Message string
	// RetryAfter is the delay the Retry-After header asked for, capped at 5
	// minutes; 0 when there was none.
	RetryAfter time.Duration
}

// Error describes the answer, e.g. "external answered 429 Too Many Requests:
// slow down (retry after 2s)".
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "external answered %d", e.StatusCode)
	if text := http.StatusText(e.StatusCode); text != "" {
		b.WriteString(" " + text)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " [%s]", e.Code)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Permanent reports whether retrying the poll that returned err cannot help:
// a rejected cursor, or a 4xx answer other than 408 Request Timeout, 425 Too
// Early and 429 Too Many Requests. 5xx answers, throttling, network errors,
// timeouts, malformed (often cut) bodies and context errors are not
// permanent.
func Permanent(err error) bool {
	if errors.Is(err, ErrCursorExpired) || errors.Is(err, ErrBadCursor) {
		return true
	}
	var se *StatusError
	if !errors.As(err, &se) {
		return false
	}
	switch se.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return false
	}
	return se.StatusCode >= 400 && se.StatusCode <= 499
}

// RetryAfter returns the delay a 429 or 503 answer asked for in its
// Retry-After header, at most 5 minutes; it reports false for other errors
// and when no positive delay was asked for.
func RetryAfter(err error) (time.Duration, bool) {
	var se *StatusError
	if !errors.As(err, &se) || se.RetryAfter <= 0 {
		return 0, false
	}
	if se.StatusCode != http.StatusTooManyRequests && se.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	return min(se.RetryAfter, maxRetryAfter), true
}

// parseRetryAfter reads a Retry-After header, delay-seconds or an HTTP date,
// as a delay from now capped at maxRetryAfter; 0 when absent, invalid or past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(maxRetryAfter/time.Second) { // too large to parse is large
			return maxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), maxRetryAfter)
}

// shorten makes text from the network fit for an error message: printable,
// on one line, valid UTF-8, and at most n bytes plus an ellipsis.
func shorten(s string, n int) string {
	if len(s) > 4*n { // enough to fill n bytes after collapsing most whitespace
		s = s[:4*n]
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	return truncate(s, n)
}

// quoteShort quotes s, cut to at most n bytes plus an ellipsis.
func quoteShort(s string, n int) string { return strconv.Quote(truncate(s, n)) }

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
