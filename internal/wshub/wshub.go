// Package wshub fans JSON frames out to WebSocket clients subscribed to
// chats, for the external and the internal app alike: one owner of the
// subscriber set, a send queue per client bounded by frames and by bytes, a
// client that falls behind closed with a policy-violation code instead of
// slowing the others, an optional cap on connections and a token bucket per
// connection, and the read/write loops with their limits, pings and close
// codes.
package wshub

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Limits and timings of a connection.
const (
	// ReadLimit bounds one client frame; sub/unsub frames are tiny.
	ReadLimit = 4 << 10
	// WriteTimeout bounds one frame write; a peer that does not read for
	// this long is gone or hopelessly slow.
	WriteTimeout = 10 * time.Second
	// PingPeriod keeps idle connections alive through proxies and detects
	// dead peers; a ping must be answered within WriteTimeout.
	PingPeriod = 30 * time.Second
	// SendBuffer is how many outgoing frames a client may have queued. A
	// browser that cannot keep up for that long is dropped rather than
	// allowed to slow down everyone else's updates.
	SendBuffer = 256
	// SendBufferBytes is how many bytes of frames a client may have
	// queued: 256 frames can be 256 loads, and a load is up to a page of
	// messages. It holds four of the internal app's pages (at most 256 KiB
	// each, api.MaxPageBytes); a client that leaves more unread is dropped
	// like one that leaves too many frames. A single larger frame is still
	// queued to a client with nothing queued, so that it is never refused
	// whatever its size. Frames published to many clients share one copy.
	SendBufferBytes = 1 << 20
	// RetryAfter is the Retry-After a connection refused at the cap is
	// given (HTTP 503): time for a load balancer to move it elsewhere.
	RetryAfter = 5 * time.Second
	// MaxSubscriptions bounds the chats one client may subscribe to (a UI
	// subscribes to the chat it shows); beyond it Subscribe refuses.
	MaxSubscriptions = 100
	// MaxEnded bounds the chats a client is remembered to have been shown
	// deleted (Ended): one per load of a deleted chat, a handful in
	// practice; beyond it an announcement is no longer held back (at most
	// a few tens of kB per client).
	MaxEnded = 4 * MaxSubscriptions
)

// ErrTooManySubscriptions is Subscribe's answer beyond MaxSubscriptions.
var ErrTooManySubscriptions = errors.New("too many subscriptions on one connection")

// Limits are a hub's bounds on its connections; the zero Limits bound
// nothing but what the constants above bound.
type Limits struct {
	// MaxClients caps the connections the hub serves at once; beyond it
	// Accept answers 503 with Retry-After. 0: no cap.
	MaxClients int
	// Rate and Burst are the token bucket of each connection that Allow
	// draws from (the requests that cost a read of the database: a sub, a
	// page). Rate 0: no limit.
	Rate  rate.Limit
	Burst int
}

// Frame is one client → server frame: {"type":"sub","id":"…"}.
type Frame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	// Raw is the frame as received, for handlers whose frames carry more
	// fields.
	Raw []byte `json:"-"`
}

// Client is one WebSocket connection's send queue.
type Client struct {
	send chan []byte
	// queued is the bytes of the frames in send.
	queued atomic.Int64
	// limiter is the connection's token bucket (nil: no limit).
	limiter *rate.Limiter
	// slow is closed by the hub when the queue overflowed; the connection
	// then closes with a policy-violation code.
	slow     chan struct{}
	slowOnce sync.Once
	// seen holds, for each chat the client subscribed to, the highest
	// version of each item (a message) queued for it by PublishVersion and
	// SendLoad, so it is never sent an older one after a newer. Guarded by
	// the hub's mu.
	seen map[string]map[string]int64
	// ended holds the chats the client was shown deleted by a load (Ended),
	// kept across unsubscribe, so that PublishNew never announces one of
	// them afterwards. Guarded by the hub's mu.
	ended map[string]bool
}

// Metrics are a hub's Prometheus metrics.
type Metrics struct {
	clients       prometheus.Gauge
	badFrames     prometheus.Counter
	slowDropped   prometheus.Counter
	refused       prometheus.Counter
	rateLimited   prometheus.Counter
	writeTimeouts prometheus.Counter
}

// NewMetrics registers <prefix>_ws_clients, <prefix>_ws_bad_frames_total,
// <prefix>_ws_slow_clients_dropped_total,
// <prefix>_ws_connections_refused_total, <prefix>_ws_rate_limited_total
// and <prefix>_ws_write_timeouts_total with reg.
func NewMetrics(reg prometheus.Registerer, prefix string) *Metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + name, Help: help})
	}
	m := &Metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: prefix + "_ws_clients", Help: "Connected WebSocket clients.",
		}),
		badFrames: counter("_ws_bad_frames_total",
			"WebSocket connections closed for an invalid frame (not JSON text, too large, unknown type)."),
		slowDropped: counter("_ws_slow_clients_dropped_total",
			"WebSocket clients closed because they fell behind (their send queue full, by frames or by bytes)."),
		refused: counter("_ws_connections_refused_total",
			"WebSocket handshakes refused with 503 because the instance serves its most connections."),
		rateLimited: counter("_ws_rate_limited_total",
			"WebSocket requests (sub, more) refused because their connection exceeded its rate."),
		writeTimeouts: counter("_ws_write_timeouts_total",
			"WebSocket connections closed because a frame or ping could not be written within the write timeout."),
	}
	reg.MustRegister(m.clients, m.badFrames, m.slowDropped, m.refused, m.rateLimited, m.writeTimeouts)
	return m
}

// Hub owns the subscriber set: every client, the subscribers of each chat,
// and the clients subscribed to all chats.
type Hub struct {
	metrics *Metrics
	limits  Limits
	// conns counts the connections accepted and not ended, reserved
	// before the handshake so that the cap holds under a burst.
	conns atomic.Int64

	mu      sync.Mutex
	clients map[*Client]struct{}
	byChat  map[string]map[*Client]struct{}
	allChat map[*Client]struct{}
}

// New returns an empty hub that counts into m and keeps limits.
func New(m *Metrics, limits Limits) *Hub {
	return &Hub{
		metrics: m,
		limits:  limits,
		clients: map[*Client]struct{}{},
		byChat:  map[string]map[*Client]struct{}{},
		allChat: map[*Client]struct{}{},
	}
}

func (h *Hub) register() *Client {
	c := &Client{send: make(chan []byte, SendBuffer), slow: make(chan struct{}), seen: map[string]map[string]int64{},
		ended: map[string]bool{}}
	if h.limits.Rate > 0 {
		c.limiter = rate.NewLimiter(h.limits.Rate, max(h.limits.Burst, 1))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients[c] = struct{}{}
	return c
}

func (h *Hub) unregister(c *Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
	delete(h.allChat, c)
	for id, subs := range h.byChat {
		delete(subs, c)
		if len(subs) == 0 {
			delete(h.byChat, id)
		}
	}
}

// Subscribe adds c to chatID's subscribers, or to every chat's when chatID
// is "". A client may subscribe to at most MaxSubscriptions chats.
func (h *Hub) Subscribe(c *Client, chatID string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if chatID == "" {
		h.allChat[c] = struct{}{}
		return nil
	}
	if _, ok := c.seen[chatID]; !ok {
		if len(c.seen) >= MaxSubscriptions {
			return ErrTooManySubscriptions
		}
		c.seen[chatID] = map[string]int64{}
	}
	subs := h.byChat[chatID]
	if subs == nil {
		subs = map[*Client]struct{}{}
		h.byChat[chatID] = subs
	}
	subs[c] = struct{}{}
	return nil
}

// Unsubscribe removes c from chatID's subscribers (every chat's for "").
func (h *Hub) Unsubscribe(c *Client, chatID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if chatID == "" {
		delete(h.allChat, c)
		return
	}
	delete(c.seen, chatID)
	delete(h.byChat[chatID], c)
	if len(h.byChat[chatID]) == 0 {
		delete(h.byChat, chatID)
	}
}

// Allow takes a token from c's bucket: false (counted) when c exceeded its
// rate and the request must be refused.
func (h *Hub) Allow(c *Client) bool {
	if c.limiter == nil || c.limiter.Allow() {
		return true
	}
	h.metrics.rateLimited.Inc()
	return false
}

// Subscribed reports whether c is subscribed to chatID.
func (h *Hub) Subscribed(c *Client, chatID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := c.seen[chatID]
	return ok
}

// Clients returns the number of connected clients.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// Publish queues frame for chatID's subscribers and the all-chats
// subscribers, or for every client when everyone is set.
func (h *Hub) Publish(frame []byte, chatID string, everyone bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	targets := h.byChat[chatID]
	if everyone {
		targets = h.clients
	}
	for c := range targets {
		h.enqueue(c, frame)
	}
	if !everyone {
		for c := range h.allChat {
			if _, dup := targets[c]; !dup {
				h.enqueue(c, frame)
			}
		}
	}
}

// PublishNew queues frame, which announces chatID (a new chat), for every
// client that was not shown the chat deleted (Ended). A consumer behind the
// database (just restarted, its Kafka cluster back after an outage) may
// announce a chat that a client's load, read from the database, already
// showed deleted; a deleted chat never comes back.
func (h *Hub) PublishNew(frame []byte, chatID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if !c.ended[chatID] {
			h.enqueue(c, frame)
		}
	}
}

// Ended records that c is being shown chatID deleted (by its load): later
// announcements of the chat (PublishNew) are not sent to c. Call it before
// queueing the load.
func (h *Hub) Ended(c *Client, chatID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(c.ended) < MaxEnded {
		c.ended[chatID] = true
	}
}

// PublishVersion queues frame, which carries version of item (a message)
// of chatID, for the chat's subscribers that have not been queued that
// version or a newer one of the item — by an earlier PublishVersion or by
// their load (SendLoad) — and for the all-chats subscribers. A consumer
// that replays older changes (after a restart, behind its database) thus
// never shows a client an older version after a newer one.
func (h *Hub) PublishVersion(frame []byte, chatID, item string, version int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	targets := h.byChat[chatID]
	for c := range targets {
		if seen := c.seen[chatID]; seen != nil {
			if version <= seen[item] {
				continue
			}
			seen[item] = version
		}
		h.enqueue(c, frame)
	}
	for c := range h.allChat {
		if _, dup := targets[c]; !dup {
			h.enqueue(c, frame)
		}
	}
}

// SendLoad queues a chat's load (or a page of it) for c, which subscribed
// to chatID. versions
// holds the version of each item the load carries, and encode builds its
// frame without the items in omit: those c was already queued a newer
// version of, by an update that overtook the load's read (the load must not
// take an item back to an older version; the update carries the item's
// whole state). encode runs outside the hub's lock, again with a larger omit
// if another such update came meanwhile. Later PublishVersions of an item at
// or below its version in the load are not sent to c.
func (h *Hub) SendLoad(c *Client, chatID string, versions map[string]int64, encode func(omit map[string]bool) []byte) {
	omit := map[string]bool{}
	for {
		frame := encode(omit)
		if h.sendLoad(c, chatID, frame, versions, omit) {
			return
		}
	}
}

// sendLoad queues frame, a load of chatID holding versions less the items in
// omit, unless c was queued a newer version of another of its items: it then
// adds those to omit and reports false.
func (h *Hub) sendLoad(c *Client, chatID string, frame []byte, versions map[string]int64, omit map[string]bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := c.seen[chatID]
	if seen == nil {
		h.enqueue(c, frame) // unsubscribed meanwhile: no floor to keep
		return true
	}
	overtaken := false
	for item, v := range versions {
		if !omit[item] && seen[item] > v {
			omit[item] = true
			overtaken = true
		}
	}
	if overtaken {
		return false
	}
	h.enqueue(c, frame)
	for item, v := range versions {
		if v > seen[item] {
			seen[item] = v
		}
	}
	return true
}

// SendTo queues frame for c alone (a load, an error).
func (h *Hub) SendTo(c *Client, frame []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.enqueue(c, frame)
}

// enqueue never blocks: a client whose queue is full — SendBuffer frames,
// or SendBufferBytes bytes — is marked slow and will be disconnected by its
// writer.
func (h *Hub) enqueue(c *Client, frame []byte) {
	n := int64(len(frame))
	if q := c.queued.Add(n); q > SendBufferBytes && q > n {
		c.queued.Add(-n)
		h.dropSlow(c)
		return
	}
	select {
	case c.send <- frame:
	default:
		c.queued.Add(-n)
		h.dropSlow(c)
	}
}

func (h *Hub) dropSlow(c *Client) {
	c.slowOnce.Do(func() {
		close(c.slow)
		h.metrics.slowDropped.Inc()
	})
}

// Handler handles the frames of one client; it returns a close code and
// reason to end the connection (a frame it refuses), or 0 to go on.
type Handler func(ctx context.Context, c *Client, f Frame) (websocket.StatusCode, string)

// Accept upgrades the request to a WebSocket and serves it until it ends (see
// Serve). A page of another origin than the server's may connect only if
// its host matches one of origins (patterns like "localhost:30002"); others
// get 403. Beyond Limits.MaxClients connections it answers 503 with
// Retry-After (counted), before the handshake.
func (h *Hub) Accept(w http.ResponseWriter, r *http.Request, origins []string, handle Handler) {
	n := h.conns.Add(1)
	defer h.conns.Add(-1)
	if h.limits.MaxClients > 0 && n > int64(h.limits.MaxClients) {
		h.metrics.refused.Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(RetryAfter/time.Second)))
		http.Error(w, "too many connections; try again later", http.StatusServiceUnavailable)
		return
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: origins})
	if err != nil {
		return // Accept has written the HTTP error (403 for a foreign Origin)
	}
	h.metrics.clients.Inc()
	defer h.metrics.clients.Dec()
	h.Serve(r.Context(), conn, handle)
}

// Serve runs an accepted connection until it ends: registers its client,
// reads frames (text JSON only, at most ReadLimit bytes) and hands them to
// handle, and writes queued frames and pings. A frame that is not JSON
// text, or that handle refuses, closes the connection with the matching
// code and is counted; other clients are not affected.
func (h *Hub) Serve(ctx context.Context, conn *websocket.Conn, handle Handler) {
	conn.SetReadLimit(ReadLimit)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := h.register()
	defer h.unregister(c)
	go func() {
		status, reason := writeLoop(ctx, conn, c, h.metrics.writeTimeouts.Inc)
		conn.Close(status, reason)
		cancel()
	}()
	status, reason := readLoop(ctx, conn, c, handle, h.metrics.badFrames.Inc)
	conn.Close(status, reason)
}

func readLoop(ctx context.Context, conn *websocket.Conn, c *Client, handle Handler, bad func()) (websocket.StatusCode, string) {
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) || websocket.CloseStatus(err) == websocket.StatusMessageTooBig {
				bad()
				return websocket.StatusMessageTooBig, "frame too large"
			}
			return websocket.StatusNormalClosure, ""
		}
		if typ != websocket.MessageText {
			bad()
			return websocket.StatusUnsupportedData, "binary frames are not supported; send JSON text"
		}
		var f Frame
		if err := json.Unmarshal(data, &f); err != nil {
			bad()
			return websocket.StatusInvalidFramePayloadData, "invalid JSON"
		}
		f.Raw = data
		if status, reason := handle(ctx, c, f); status != 0 {
			bad()
			return status, reason
		}
	}
}

// writeLoop writes queued frames and pings until the connection ends. A
// client that fell behind is closed with a policy violation; a write or
// ping not done within WriteTimeout ends the connection (counted by
// timedOut).
func writeLoop(ctx context.Context, conn *websocket.Conn, c *Client, timedOut func()) (websocket.StatusCode, string) {
	ping := time.NewTicker(PingPeriod)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return websocket.StatusGoingAway, "server closing connection"
		case <-c.slow:
			return websocket.StatusPolicyViolation, "client too slow; reconnect and reload"
		case frame := <-c.send:
			c.queued.Add(-int64(len(frame)))
			wctx, cancel := context.WithTimeout(ctx, WriteTimeout)
			err := conn.Write(wctx, websocket.MessageText, frame)
			timeout := errors.Is(wctx.Err(), context.DeadlineExceeded)
			cancel()
			if err != nil {
				if timeout {
					timedOut()
				}
				return websocket.StatusGoingAway, "write failed"
			}
		case <-ping.C:
			pctx, cancel := context.WithTimeout(ctx, WriteTimeout)
			err := conn.Ping(pctx)
			timeout := errors.Is(pctx.Err(), context.DeadlineExceeded)
			cancel()
			if err != nil {
				if timeout {
					timedOut()
				}
				return websocket.StatusGoingAway, "ping timeout"
			}
		}
	}
}
