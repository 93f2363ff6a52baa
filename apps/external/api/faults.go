package api

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// Faults are the misbehaviours the service can be told to show, so tests and
// demos can check that the sync survives them. The zero value injects nothing.
// Rates are shares of API requests, from 0 to 1; they apply to the REST API,
// the change feed and WebSocket handshakes, never to /admin, /healthz,
// /readyz, /metrics or the UI's static files.
type Faults struct {
	Latency       Duration `json:"latency"`       // added before every API request is handled
	LatencyJitter Duration `json:"latencyJitter"` // plus a uniform random share of this
	ErrorRate     float64  `json:"errorRate"`     // answered 500 without doing anything
	ThrottleRate  float64  `json:"throttleRate"`  // answered 429 with Retry-After, without doing anything
	RetryAfter    Duration `json:"retryAfter"`    // the Retry-After of 429s (rounded up to seconds; default 1s)
	DropRate      float64  `json:"dropRate"`      // handled, then the connection is cut halfway through the response body
	FeedPaused    bool     `json:"feedPaused"`    // the change feed returns empty pages (cursor unchanged) while set
	// FeedPoison corrupts, in the change feed's answers only, the changes of
	// messages whose content is one of its keys, as its value says:
	// PoisonLongID or PoisonInvalidUTF8. The service itself never stores
	// or sends such data; this shows what a consumer does when a third
	// party does.
	FeedPoison map[string]Poison `json:"feedPoison,omitempty"`
}

// Poison is a way FeedPoison corrupts a change.
type Poison string

// The corruptions of FeedPoison.
const (
	// PoisonLongID: the message's ID is 10,000 bytes long.
	PoisonLongID Poison = "long-id"
	// PoisonInvalidUTF8: the message's content is bytes that are not UTF-8.
	PoisonInvalidUTF8 Poison = "invalid-utf8"
)

// Values of the corruptions.
const (
	poisonIDBytes = 10_000
	// poisonContent replaces the content of PoisonInvalidUTF8: "bad " and
	// two bytes that cannot start a UTF-8 sequence.
	poisonContent = "bad \xff\xfe"
)

func (f Faults) validate() error {
	for name, r := range map[string]float64{"errorRate": f.ErrorRate, "throttleRate": f.ThrottleRate, "dropRate": f.DropRate} {
		if r < 0 || r > 1 {
			return fmt.Errorf("%s must be between 0 and 1", name)
		}
	}
	if f.ErrorRate+f.ThrottleRate > 1 {
		return errors.New("errorRate + throttleRate must not exceed 1")
	}
	for content, p := range f.FeedPoison {
		if p != PoisonLongID && p != PoisonInvalidUTF8 {
			return fmt.Errorf("feedPoison[%q]: %q is not %q or %q", content, p, PoisonLongID, PoisonInvalidUTF8)
		}
	}
	if f.Latency < 0 || f.LatencyJitter < 0 || f.RetryAfter < 0 {
		return errors.New("durations must not be negative")
	}
	if time.Duration(f.Latency+f.LatencyJitter) > time.Minute {
		return errors.New("latency + latencyJitter must not exceed 1m")
	}
	return nil
}

// Duration is a time.Duration written in JSON as a string such as "250ms".
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`durations are strings such as "250ms"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// faultInjector holds the current faults; they can be changed at run time.
type faultInjector struct {
	mu      sync.Mutex
	faults  Faults
	metrics *metrics
}

func newFaultInjector(f Faults, m *metrics) *faultInjector {
	return &faultInjector{faults: f, metrics: m}
}

func (fi *faultInjector) get() Faults {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.faults
}

func (fi *faultInjector) set(f Faults) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.faults = f
}

func (fi *faultInjector) feedPaused() bool { return fi.get().FeedPaused }

// feedPoison returns the current FeedPoison (nil: none).
func (fi *faultInjector) feedPoison() map[string]Poison { return fi.get().FeedPoison }

// poisonedPage encodes a feed page with the changes poison names corrupted
// (see Faults.FeedPoison); n counts them.
func poisonedPage(page feedPage, poison map[string]Poison) (body []byte, n int, err error) {
	var b bytes.Buffer
	b.WriteString(`{"changes":[`)
	for i, c := range page.Changes {
		if i > 0 {
			b.WriteByte(',')
		}
		var p Poison
		if c.Message != nil {
			p = poison[c.Message.Content]
		}
		var placeholder string
		switch p {
		case PoisonLongID:
			m := *c.Message
			m.ID = strings.Repeat("9", poisonIDBytes)
			c.Message = &m
		case PoisonInvalidUTF8:
			// encoding/json would replace invalid bytes: a placeholder,
			// replaced after encoding.
			m := *c.Message
			placeholder = "poison-placeholder-" + strconv.Itoa(i)
			m.Content = placeholder
			c.Message = &m
		}
		enc, err := json.Marshal(c)
		if err != nil {
			return nil, 0, fmt.Errorf("encode change %d: %w", i, err)
		}
		if placeholder != "" {
			enc = bytes.Replace(enc, []byte(`"`+placeholder+`"`), []byte(`"`+poisonContent+`"`), 1)
		}
		if p != "" {
			n++
		}
		b.Write(enc)
	}
	cursor, err := json.Marshal(page.Cursor)
	if err != nil {
		return nil, 0, fmt.Errorf("encode cursor: %w", err)
	}
	b.WriteString(`],"cursor":`)
	b.Write(cursor)
	b.WriteString("}\n")
	return b.Bytes(), n, nil
}

func (fi *faultInjector) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		f := fi.get()
		if delay := time.Duration(f.Latency) + time.Duration(rand.Float64()*float64(f.LatencyJitter)); delay > 0 {
			fi.metrics.faults.WithLabelValues("latency").Inc()
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-c.Request().Context().Done():
				t.Stop()
				return c.Request().Context().Err()
			}
		}
		switch r := rand.Float64(); {
		case r < f.ErrorRate:
			fi.metrics.faults.WithLabelValues("error").Inc()
			return c.JSON(http.StatusInternalServerError, apiError{Error: "injected fault: internal server error"})
		case r < f.ErrorRate+f.ThrottleRate:
			fi.metrics.faults.WithLabelValues("throttle").Inc()
			retry := max(time.Duration(f.RetryAfter), time.Second)
			c.Response().Header().Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
			return c.JSON(http.StatusTooManyRequests, apiError{Error: "injected fault: too many requests"})
		}
		if f.DropRate > 0 && rand.Float64() < f.DropRate && !isWebSocket(c.Request()) {
			fi.metrics.faults.WithLabelValues("drop").Inc()
			return dropMidResponse(c, next)
		}
		return next(c)
	}
}

func isWebSocket(r *http.Request) bool { return r.Header.Get("Upgrade") != "" }

// dropMidResponse runs the handler into a buffer, then sends the status, the
// headers (with the full Content-Length) and half of the body, and closes the
// connection: the client sees a truncated response, as when a proxy dies.
func dropMidResponse(c echo.Context, next echo.HandlerFunc) error {
	res := c.Response()
	orig := res.Writer
	buf := &bufferedResponse{header: http.Header{}, status: http.StatusOK}
	res.Writer = buf
	if err := next(c); err != nil {
		c.Error(err)
	}
	res.Writer = orig
	hj, ok := orig.(http.Hijacker)
	if !ok {
		return errors.New("drop fault: connection cannot be hijacked")
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return fmt.Errorf("drop fault: hijack: %w", err)
	}
	defer conn.Close()
	writePartial(rw.Writer, buf)
	return nil
}

func writePartial(w *bufio.Writer, buf *bufferedResponse) {
	body := buf.body.Bytes()
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\n", buf.status, http.StatusText(buf.status))
	buf.header.Set("Content-Length", strconv.Itoa(len(body)))
	buf.header.Set("Connection", "close")
	_ = buf.header.Write(w)
	fmt.Fprint(w, "\r\n")
	_, _ = w.Write(body[:len(body)/2])
	_ = w.Flush()
}

// bufferedResponse is an http.ResponseWriter that keeps the response in memory.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *bufferedResponse) WriteHeader(status int)      { b.status = status }

func (s *Server) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.cfg.AdminToken == "" {
			return echo.NewHTTPError(http.StatusNotFound, "fault injection is disabled: set EXTERNAL_ADMIN_TOKEN to enable /admin/faults")
		}
		want := []byte("Bearer " + s.cfg.AdminToken)
		if subtle.ConstantTimeCompare([]byte(c.Request().Header.Get("Authorization")), want) != 1 {
			return echo.NewHTTPError(http.StatusUnauthorized, "missing or wrong bearer token")
		}
		return next(c)
	}
}

func (s *Server) getFaults(c echo.Context) error { return c.JSON(http.StatusOK, s.faults.get()) }

func (s *Server) putFaults(c echo.Context) error {
	var f Faults
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return badRequest("body must be a JSON Faults object: " + err.Error())
	}
	if err := f.validate(); err != nil {
		return badRequest(err.Error())
	}
	s.faults.set(f)
	s.log.WarnContext(c.Request().Context(), "fault injection changed", "faults", f)
	return c.JSON(http.StatusOK, f)
}
