// Package feed is the client of the external service's change feed
// (GET /api/changes): it polls one page per call, checks every change it
// returns, and classifies what went wrong so that its caller (the sync
// activity, which owns the retry loop and the heartbeats) knows whether to
// retry, how long to wait, or to give up.
//
// The types mirror the feed's JSON; the package does not import the external
// service's code, which is another system as far as the sync is concerned.
package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"
)

// Kind says what a Change did.
type Kind string

// The kinds of changes the feed reports. A change of any other kind is
// malformed (Change.Malformed): the sync must not skip changes it does not
// understand, so it dead-letters it.
const (
	KindChatCreated    Kind = "chat.created"
	KindChatDeleted    Kind = "chat.deleted"
	KindMessageCreated Kind = "message.created"
	KindMessageUpdated Kind = "message.updated"
	KindMessageDeleted Kind = "message.deleted"
)

// Message is a message as it was right after a change. UpdatedAt is the time
// of its last write (creation, edit or deletion) on the external service.
type Message struct {
	ID        string    `json:"id"`
	ChatID    string    `json:"chatId"`
	Content   string    `json:"content"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	IsDeleted bool      `json:"isDeleted"`
	Version   int64     `json:"version"`
}

// Change is one entry of the feed. Message is set for the message kinds and
// nil for the chat kinds. Version is the chat's or the message's version
// after the change; versions increase along the feed for one chat and for one
// message.
type Change struct {
	Kind    Kind      `json:"kind"`
	ChatID  string    `json:"chatId"`
	Message *Message  `json:"message,omitempty"`
	Version int64     `json:"version"`
	At      time.Time `json:"at"`

	// Raw is the change's JSON exactly as the feed sent it, for a dead
	// letter.
	Raw []byte `json:"-"`
	// Malformed, when set, says why the change breaks the feed's contract
	// (not UTF-8, not decodable, an unknown kind, a missing field, larger
	// than MaxChangeBytes); it wraps ErrBadChange. The other fields then
	// hold what could be read, if anything. The page around it is good: its
	// cursor passes the change, which the caller must not drop silently
	// (the sync dead-letters it).
	Malformed error `json:"-"`
}

// Page is one answer of the feed: the changes after the cursor polled, oldest
// first, and the cursor to poll next. Cursor is the cursor polled when there
// was nothing new (empty when polling from the start of an empty feed).
type Page struct {
	Changes []Change
	Cursor  string
}

// Options configures a Client. The zero value is ready to use.
type Options struct {
	// HTTPClient sends the polls. Nil means a client of this package's own
	// with dial and TLS handshake timeouts. Each poll bounds itself with a
	// deadline of its wait plus 10 s, so a client given here needs no Timeout;
	// one shorter than the longest wait would cut long-polls short.
	HTTPClient *http.Client
	// UserAgent is sent with every poll; empty means Go's default.
	UserAgent string
}

// Limits of one poll.
const (
	// requestMargin is how much longer than the long-poll wait a poll may take
	// as a whole: the connection, the server's page query after its wake-up,
	// and the transfer of up to maxBodyBytes. A poll that takes longer is
	// abandoned and reported as a retryable error.
	requestMargin = 10 * time.Second
	// MaxPageBytes bounds a page's body, so that a page and what the sync
	// makes of it (its changes decoded, their records, the producer's copy:
	// about five times this at the peak) stay well inside the sync worker's
	// 256 MiB. Its changes are capped by count only, and the largest page
	// the feed can send (1000 changes of 10,000-character messages, every
	// character escaped as \uXXXX) is about 58 MiB; a page of 1000 such
	// messages in plain ASCII, about 10 MiB, fits. A larger page is not read:
	// Poll returns ErrPageTooLarge and the caller polls again for fewer
	// changes. A page of one change larger than this cannot be read at all.
	MaxPageBytes = 16 << 20
	// MaxChangeBytes bounds one change's JSON: the feed's largest is about
	// 60 KB (10,000 characters escaped as \uXXXX), and nothing larger can be
	// published (Kafka takes records of up to 1 MB). A larger change is
	// malformed, and is not decoded.
	MaxChangeBytes = 1 << 20
	// maxErrorBodyBytes is how much of an error response is read to find its
	// message; maxErrorMessageBytes is how much of that message an error shows.
	maxErrorBodyBytes    = 64 << 10
	maxErrorMessageBytes = 200
	// maxCursorInError bounds the cursor quoted in errors: cursors the feed
	// issued are short, but a cursor given by hand may be anything.
	maxCursorInError = 64
)

// Transport timeouts of the default HTTP client. The response as a whole is
// bounded per poll, since a long-poll's headers legitimately take as long as
// its wait.
const (
	dialTimeout         = 5 * time.Second
	tlsHandshakeTimeout = 5 * time.Second
	idleConnTimeout     = 90 * time.Second
)

// Client polls the change feed of one external service. It is safe for
// concurrent use.
type Client struct {
	endpoint  string // the feed's URL, without a query
	http      *http.Client
	userAgent string
}

// New returns a client of the feed of the service at baseURL, an http or https
// URL whose path, if any, is the prefix the service is served under. It does
// no I/O.
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("feed base URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("feed base URL %q: scheme must be http or https", baseURL)
	case u.Host == "":
		return nil, fmt.Errorf("feed base URL %q: no host", baseURL)
	case u.User != nil:
		return nil, errors.New("feed base URL: must not hold credentials")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("feed base URL %q: must have no query or fragment", baseURL)
	}
	endpoint := u.JoinPath("api", "changes")
	hc := opts.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient()
	}
	return &Client{endpoint: endpoint.String(), http: hc, userAgent: opts.UserAgent}, nil
}

// defaultHTTPClient has no overall timeout (Poll sets one per request) but
// bounds connecting, so a dead host fails fast instead of eating the poll's
// whole deadline.
func defaultHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       idleConnTimeout,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}}
}

// Poll reads one page of the feed: the changes after cursor ("" for the
// oldest retained change), at most limit of them (0 means the service's
// default; the feed allows 1 to 1000), waiting up to wait for the first one
// when there is none yet (0 answers at once; the feed allows up to 30 s and
// answers a 400 beyond). The whole poll gets wait plus 10 s, on top of ctx.
// It makes one attempt; retrying is the caller's job, with Permanent and
// RetryAfter to decide how.
//
// It returns ErrBadCursor or ErrCursorExpired when the feed rejects the
// cursor, a *StatusError for any other non-2xx answer, an error wrapping
// ErrPageTooLarge when the body is larger than MaxPageBytes (unless limit is
// 1), an error wrapping ErrMalformed when the page breaks the feed's contract
// (no change is ever skipped), and ctx's error, wrapped, when ctx ends
// first. A change that breaks the contract within a good page is returned
// with its Malformed error set.
func (c *Client) Poll(ctx context.Context, cursor string, limit int, wait time.Duration) (Page, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if wait != 0 {
		q.Set("wait", wait.String())
	}
	timeout := max(wait, 0) + requestMargin
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	target := c.endpoint
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, target, nil)
	if err != nil {
		return Page{}, fmt.Errorf("poll feed: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		return Page{}, transportError(ctx, timeout, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return Page{}, statusError(ctx, resp, cursor)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPageBytes+1))
	if err != nil {
		return Page{}, transportError(ctx, timeout, fmt.Errorf("read response: %w", err))
	}
	if len(body) > MaxPageBytes {
		if limit == 1 {
			return Page{}, fmt.Errorf("poll feed: a page of one change larger than %d MiB", MaxPageBytes>>20)
		}
		return Page{}, fmt.Errorf("poll feed: %d changes or fewer: %w", limit, ErrPageTooLarge)
	}
	page, err := parsePage(body)
	if err != nil {
		return Page{}, fmt.Errorf("poll feed: %w", err)
	}
	return page, nil
}

// transportError reports a failure to get a whole response: the caller's
// context ending (returned as such, so errors.Is finds it), the poll's own
// deadline, or the network.
func transportError(ctx context.Context, timeout time.Duration, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("poll feed: %w", ctxErr)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("poll feed: no complete response within %s: %w", timeout, err)
	}
	return fmt.Errorf("poll feed: %w", err)
}

// statusError turns a non-2xx response into ErrBadCursor, ErrCursorExpired or
// a *StatusError.
func statusError(ctx context.Context, resp *http.Response, cursor string) error {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("poll feed: %w", ctx.Err())
	}
	// A body cut short still tells the status; what was read may hold the message.
	var ae struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	msg := ""
	if json.Unmarshal(body, &ae) == nil && ae.Error != "" {
		msg = ae.Error
	} else {
		msg = string(body)
	}
	switch {
	case resp.StatusCode == http.StatusBadRequest && ae.Code == codeBadCursor:
		return fmt.Errorf("poll feed after cursor %s: %w", quoteShort(cursor, maxCursorInError), ErrBadCursor)
	case resp.StatusCode == http.StatusGone && ae.Code == codeCursorExpired:
		return fmt.Errorf("poll feed after cursor %s: %w", quoteShort(cursor, maxCursorInError), ErrCursorExpired)
	}
	return fmt.Errorf("poll feed: %w", &StatusError{
		StatusCode: resp.StatusCode,
		Code:       shorten(ae.Code, maxErrorMessageBytes),
		Message:    shorten(msg, maxErrorMessageBytes),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	})
}

// feedPage is the feed's JSON. The pointers tell a missing field from an
// empty one; the changes are decoded one by one (parseChange), so that one
// bad change does not hide the others.
type feedPage struct {
	Changes *[]json.RawMessage `json:"changes"`
	Cursor  *string            `json:"cursor"`
}

// parsePage decodes and checks a page. Unknown fields are accepted, so the
// service may add some; a missing or wrong one makes the page malformed.
func parsePage(body []byte) (Page, error) {
	var p feedPage
	if err := json.Unmarshal(body, &p); err != nil {
		return Page{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	switch {
	case p.Changes == nil:
		return Page{}, fmt.Errorf("%w: no changes array", ErrMalformed)
	case p.Cursor == nil:
		return Page{}, fmt.Errorf("%w: no cursor", ErrMalformed)
	case len(*p.Changes) > 0 && *p.Cursor == "":
		return Page{}, fmt.Errorf("%w: %d changes and an empty cursor", ErrMalformed, len(*p.Changes))
	}
	changes := make([]Change, len(*p.Changes))
	for i, raw := range *p.Changes {
		changes[i] = parseChange(raw)
	}
	return Page{Changes: changes, Cursor: *p.Cursor}, nil
}

// parseChange decodes and checks one change. JSON must be UTF-8, and Go's
// decoder would silently replace invalid bytes with U+FFFD: that is checked
// on the raw bytes first.
func parseChange(raw []byte) Change {
	var c Change
	if len(raw) > MaxChangeBytes {
		// Not decoded (its strings would take as much memory again): only
		// its kind and chat, if they can be read, for the dead letter.
		_ = json.Unmarshal(raw, &struct {
			Kind   *Kind   `json:"kind"`
			ChatID *string `json:"chatId"`
		}{&c.Kind, &c.ChatID})
		c.Raw = raw
		c.Malformed = fmt.Errorf("%w: %d bytes, more than %d", ErrBadChange, len(raw), MaxChangeBytes)
		return c
	}
	err := json.Unmarshal(raw, &c)
	c.Raw = raw
	switch {
	case !utf8.Valid(raw):
		c.Malformed = fmt.Errorf("%w: not valid UTF-8 (byte %d)", ErrBadChange, invalidUTF8At(raw))
	case err != nil:
		c.Malformed = fmt.Errorf("%w: %w", ErrBadChange, err)
	default:
		if err := c.validate(); err != nil {
			c.Malformed = fmt.Errorf("%w: %w", ErrBadChange, err)
		}
	}
	return c
}

// invalidUTF8At returns the offset of the first byte of b that is not valid
// UTF-8, or len(b).
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// validate checks one change against the feed's contract.
func (ch *Change) validate() error {
	var isMessage bool
	switch ch.Kind {
	case KindChatCreated, KindChatDeleted:
	case KindMessageCreated, KindMessageUpdated, KindMessageDeleted:
		isMessage = true
	default:
		return fmt.Errorf("unknown kind %s", quoteShort(string(ch.Kind), 40))
	}
	switch {
	case ch.ChatID == "":
		return fmt.Errorf("%s without a chat ID", ch.Kind)
	case ch.Version <= 0:
		return fmt.Errorf("%s of chat %s: version %d, want a positive one", ch.Kind, quoteShort(ch.ChatID, 40), ch.Version)
	case !isMessage && ch.Message != nil:
		return fmt.Errorf("%s of chat %s carries a message", ch.Kind, quoteShort(ch.ChatID, 40))
	case isMessage && ch.Message == nil:
		return fmt.Errorf("%s of chat %s without its message", ch.Kind, quoteShort(ch.ChatID, 40))
	case isMessage && ch.Message.ID == "":
		return fmt.Errorf("%s of chat %s: message without an ID", ch.Kind, quoteShort(ch.ChatID, 40))
	case isMessage && ch.Message.ChatID != ch.ChatID:
		return fmt.Errorf("%s of chat %s: message %s belongs to chat %s", ch.Kind, quoteShort(ch.ChatID, 40),
			quoteShort(ch.Message.ID, 40), quoteShort(ch.Message.ChatID, 40))
	}
	return nil
}
