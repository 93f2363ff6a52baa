// Package wshub fans JSON frames out to WebSocket clients subscribed to
// chats, for the external and the internal app alike: one owner of the
// subscriber set, a bounded send queue per client, a client that falls
// behind closed with a policy-violation code instead of slowing the others,
// and the read/write loops with their limits, pings and close codes.
package wshub

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
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

// Frame is one client → server frame: {"type":"sub","id":"…"}.
type Frame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Client is one WebSocket connection's send queue.
type Client struct {
	send chan []byte
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
	clients     prometheus.Gauge
	badFrames   prometheus.Counter
	slowDropped prometheus.Counter
}

// NewMetrics registers <prefix>_ws_clients, <prefix>_ws_bad_frames_total
// and <prefix>_ws_slow_clients_dropped_total with reg.
func NewMetrics(reg prometheus.Registerer, prefix string) *Metrics {
	m := &Metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: prefix + "_ws_clients", Help: "Connected WebSocket clients.",
		}),
		badFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: prefix + "_ws_bad_frames_total", Help: "WebSocket connections closed for an invalid frame (not JSON text, too large, unknown type).",
		}),
		slowDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: prefix + "_ws_slow_clients_dropped_total", Help: "WebSocket clients closed because they fell behind.",
		}),
	}
	reg.MustRegister(m.clients, m.badFrames, m.slowDropped)
	return m
}

// Hub owns the subscriber set: every client, the subscribers of each chat,
// and the clients subscribed to all chats.
type Hub struct {
	metrics *Metrics

	mu      sync.Mutex
	clients map[*Client]struct{}
	byChat  map[string]map[*Client]struct{}
	allChat map[*Client]struct{}
}

// New returns an empty hub that counts into m.
func New(m *Metrics) *Hub {
	return &Hub{
		metrics: m,
		clients: map[*Client]struct{}{},
		byChat:  map[string]map[*Client]struct{}{},
		allChat: map[*Client]struct{}{},
	}
}

func (h *Hub) register() *Client {
	c := &Client{send: make(chan []byte, SendBuffer), slow: make(chan struct{}), seen: map[string]map[string]int64{},
		ended: map[string]bool{}}
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

// SendLoad queues a chat's load for c, which subscribed to chatID. versions
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

// enqueue never blocks: a client whose queue is full is marked slow and
// will be disconnected by its writer.
func (h *Hub) enqueue(c *Client, frame []byte) {
	select {
	case c.send <- frame:
	default:
		c.slowOnce.Do(func() {
			close(c.slow)
			h.metrics.slowDropped.Inc()
		})
	}
}

// Handler handles the frames of one client; it returns a close code and
// reason to end the connection (a frame it refuses), or 0 to go on.
type Handler func(ctx context.Context, c *Client, f Frame) (websocket.StatusCode, string)

// Accept upgrades the request to a WebSocket and serves it until it ends (see
// Serve). A page of another origin than the server's may connect only if
// its host matches one of origins (patterns like "localhost:30002"); others
// get 403.
func (h *Hub) Accept(w http.ResponseWriter, r *http.Request, origins []string, handle Handler) {
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
		status, reason := writeLoop(ctx, conn, c)
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
		if status, reason := handle(ctx, c, f); status != 0 {
			bad()
			return status, reason
		}
	}
}

// writeLoop writes queued frames and pings until the connection ends. A
// client that fell behind is closed with a policy violation.
func writeLoop(ctx context.Context, conn *websocket.Conn, c *Client) (websocket.StatusCode, string) {
	ping := time.NewTicker(PingPeriod)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return websocket.StatusGoingAway, "server closing connection"
		case <-c.slow:
			return websocket.StatusPolicyViolation, "client too slow; reconnect and reload"
		case frame := <-c.send:
			wctx, cancel := context.WithTimeout(ctx, WriteTimeout)
			err := conn.Write(wctx, websocket.MessageText, frame)
			cancel()
			if err != nil {
				return websocket.StatusGoingAway, "write failed"
			}
		case <-ping.C:
			pctx, cancel := context.WithTimeout(ctx, WriteTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return websocket.StatusGoingAway, "ping timeout"
			}
		}
	}
}
