// Package api is the internal app's HTTP and WebSocket surface: the chat
// list and a chat's messages (Postgres ∪ the Redis cache, newest version
// wins), the live WebSocket, the sync's status, health, metrics and the
// browser UI.
package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/chatpoc/chat-poc/apps/internal/cache"
	"github.com/chatpoc/chat-poc/apps/internal/live"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/echoapp"
	"github.com/chatpoc/chat-poc/internal/service"
	"github.com/chatpoc/chat-poc/internal/wshub"
)

// Input limits.
const (
	// maxChatIDBytes bounds a chat ID in a path or a frame.
	maxChatIDBytes = 128
	// readTimeout bounds one load (Postgres and Redis reads).
	readTimeout = 5 * time.Second
	// cacheReadTimeout bounds the Redis share of a load; a Redis that does
	// not answer in time is left out (memory stands in).
	cacheReadTimeout = 500 * time.Millisecond
	// MaxPageBytes bounds the messages of one load or page, encoded: a page
	// of large messages (up to change.MaxContentBytes each) holds fewer
	// than Config.PageSize of them, at least one. A client's send queue
	// (wshub.SendBufferBytes) holds four such pages.
	MaxPageBytes = 256 << 10
	// MaxPageLimit bounds the limit a REST client may ask a page of.
	MaxPageLimit = 1000
	// RequestBurst is how many subs and pages a connection may ask at once
	// beyond Config.RequestRate: as many as it may hold subscriptions, so
	// that a client re-subscribing to all its chats after a reconnect (a
	// recorder of the chaos tests, say) is never refused.
	RequestBurst = wshub.MaxSubscriptions
)

var (
	errUnknownChat = errors.New("unknown chat")
	errBadCursor   = errors.New("bad cursor")
)

// Config is the API's share of the app's configuration.
type Config struct {
	// AllowedOrigins are extra host patterns (e.g. "localhost:*") whose
	// pages may open the WebSocket; same-origin pages always may.
	AllowedOrigins []string
	// Ready checks the dependencies for /readyz: nil when ready, else what
	// is wrong. Degraded (Redis down) is still ready.
	Ready func(context.Context) (degraded []string, err error)
	// Stalled says why the live consumer is stalled (nil: it is not), for
	// the UI's connection indicator.
	Stalled func() error
	// Live checks liveness for /healthz: an error (the live consumer stalled
	// past its bound) asks the supervisor to restart the process.
	Live func() error
	// PageSize is how many messages a chat's load, and each older page,
	// carries at most (the newest ones first).
	PageSize int
	// MaxClients caps the WebSocket connections (beyond: 503, try again
	// later); 0: no cap.
	MaxClients int
	// RequestRate is how many subs and pages per second a connection may
	// ask (a token bucket of RequestBurst); beyond, an error frame with
	// code rateLimited. 0: no limit.
	RequestRate float64
}

// Server serves the internal app.
type Server struct {
	echo    *echo.Echo
	db      *chatdb.DB
	cache   *cache.Cache
	mem     *live.Memory
	redis   func() bool // reports Redis down
	hub     *Hub
	status  *SyncStatus
	cfg     Config
	metrics *metrics
	log     *slog.Logger
}

// New wires the routes. redisDown reports whether Redis is unavailable (the
// live consumer knows); ui is the static browser UI served at /.
func New(db *chatdb.DB, c *cache.Cache, mem *live.Memory, redisDown func() bool, status *SyncStatus,
	ui fs.FS, reg *prometheus.Registry, cfg Config, log *slog.Logger) *Server {
	m := newMetrics(reg)
	s := &Server{
		db: db, cache: c, mem: mem, redis: redisDown, status: status,
		cfg: cfg, metrics: m, log: log,
	}
	s.hub = &Hub{Hub: wshub.New(wshub.NewMetrics(reg, "internal"), wshub.Limits{
		MaxClients: cfg.MaxClients, Rate: rate.Limit(cfg.RequestRate), Burst: RequestBurst,
	}), log: log}
	s.echo = echoapp.New("internal", reg, s.handleError, "4K") // no endpoint takes a body
	e := s.echo

	e.GET("/chats", s.listChats)
	e.GET("/chats/:id/messages", s.chatMessages)
	e.GET("/api/chats/:id/messages", s.chatPage)
	e.GET("/api/sync-status", s.syncStatus)
	e.GET("/ws", s.handleWS)
	e.GET("/api/instance-status", s.instanceStatus)
	e.GET("/healthz", s.healthy)
	e.GET("/readyz", s.ready)
	e.Any("/debug/pprof/*", echo.WrapHandler(service.Pprof()))
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	e.GET("/*", echo.WrapHandler(http.FileServerFS(ui)))
	return s
}

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Hub returns the WebSocket hub, which the live consumer notifies.
func (s *Server) Hub() *Hub { return s.hub }

type apiError struct {
	Error string `json:"error"`
}

// handleError maps errors to status codes, logs unexpected ones once, and
// never shows internals to clients.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, body := http.StatusInternalServerError, apiError{Error: "internal error"}
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		status = he.Code
		body.Error = http.StatusText(status)
		if msg, ok := he.Message.(string); ok {
			body.Error = msg
		}
	case errors.Is(err, errUnknownChat):
		status, body.Error = http.StatusNotFound, "unknown chat"
	case errors.Is(err, context.Canceled):
		status = 499 // client went away
	default:
		s.log.ErrorContext(c.Request().Context(), "request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
	}
	_ = c.JSON(status, body)
}

// validChatID reports whether id can name a chat: non-empty, short, UTF-8
// text without control characters.
func validChatID(id string) bool {
	if id == "" || len(id) > maxChatIDBytes || !utf8.ValidString(id) {
		return false
	}
	return !strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// chatJSON is a chat in GET /chats.
type chatJSON struct {
	ID      string `json:"id"`
	Version int64  `json:"version"`
}

// listChats returns the chats that are not deleted: Postgres's, and those
// this instance saw created that the writer has not stored yet.
func (s *Server) listChats(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readTimeout)
	defer cancel()
	stored, err := s.db.Chats(ctx)
	if err != nil {
		return err
	}
	byID := make(map[string]int64, len(stored))
	for _, ch := range stored {
		byID[ch.ID] = ch.Version
	}
	for _, ev := range s.mem.Chats() {
		switch v, ok := byID[ev.ID]; {
		case ev.Type == change.ChatDelete:
			delete(byID, ev.ID)
		case !ok || ev.Version > v:
			byID[ev.ID] = ev.Version
		}
	}
	out := make([]chatJSON, 0, len(byID))
	for id, v := range byID {
		out = append(out, chatJSON{id, v})
	}
	slices.SortFunc(out, func(a, b chatJSON) int { return strings.Compare(a.ID, b.ID) })
	return c.JSON(http.StatusOK, out)
}

// pageJSON is GET /api/chats/:id/messages: a page of a chat's messages,
// oldest first; whether older ones exist, and the cursor to ask them with.
type pageJSON struct {
	Messages []change.Message `json:"messages"`
	Deleted  bool             `json:"deleted"`
	HasMore  bool             `json:"hasMore"`
	Before   string           `json:"before,omitempty"`
}

// chatPage serves a page of a chat: ?before=<cursor> (none: the newest
// page), ?limit=<1..MaxPageLimit> (none: Config.PageSize).
func (s *Server) chatPage(c echo.Context) error {
	p, err := s.restPage(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pageJSON{Messages: p.msgs, Deleted: p.deleted, HasMore: p.hasMore, Before: p.before()})
}

// chatMessages is chatPage's messages alone (the API before pages; its
// callers read small chats).
func (s *Server) chatMessages(c echo.Context) error {
	p, err := s.restPage(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p.msgs)
}

func (s *Server) restPage(c echo.Context) (page, error) {
	id := c.Param("id")
	if !validChatID(id) {
		return page{}, echo.NewHTTPError(http.StatusBadRequest, "chat id must be 1-128 bytes of text")
	}
	limit := s.cfg.PageSize
	if q := c.QueryParam("limit"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 || n > MaxPageLimit {
			return page{}, echo.NewHTTPError(http.StatusBadRequest, "limit must be 1-"+strconv.Itoa(MaxPageLimit))
		}
		limit = n
	}
	before, err := parseCursor(c.QueryParam("before"))
	if err != nil {
		return page{}, echo.NewHTTPError(http.StatusBadRequest, "before must be a cursor from a page")
	}
	return s.loadPage(c.Request().Context(), id, before, limit)
}

// page is a page of a chat's messages in display order (oldest first),
// whether the chat is deleted, and whether older messages exist.
type page struct {
	msgs    []change.Message
	deleted bool
	hasMore bool
}

// before is the cursor of the next older page ("" when there is none).
func (p page) before() string {
	if !p.hasMore || len(p.msgs) == 0 {
		return ""
	}
	return formatCursor(chatdb.CursorOf(p.msgs[0]))
}

// loadPage returns the newest limit messages of chat chatID that come
// before before in display order (zero: the newest of all), and whether the
// chat is deleted: Postgres's page and the cached versions, the newer of
// the two for each message. The cache is Redis, or this instance's memory
// while Redis is down. Pages of one chat never overlap and leave no gap: a
// message's place (creation time, ID) never changes, and the newest limit
// of the union are among Postgres's newest limit and the cache's.
// A page holds at most MaxPageBytes of messages (at least one).
func (s *Server) loadPage(ctx context.Context, chatID string, before chatdb.Cursor, limit int) (page, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	// One more than the page, to tell whether older messages exist.
	stored, deleted, err := s.db.MessagesPage(ctx, chatID, before, limit+1)
	known := err == nil
	if err != nil && !errors.Is(err, chatdb.ErrNotFound) {
		return page{}, err
	}
	cached, chatEv, cachedChat := s.cached(ctx, chatID)
	if cachedChat && chatEv.Type == change.ChatDelete {
		deleted = true
	}
	if !known && len(cached) == 0 && !cachedChat {
		return page{}, errUnknownChat
	}
	byID := make(map[string]change.Message, len(stored)+len(cached))
	for _, m := range slices.Concat(stored, cached) {
		if !before.Before(m) {
			continue // on a newer page
		}
		if old, ok := byID[m.ID]; !ok || m.Version > old.Version {
			byID[m.ID] = m
		}
	}
	out := make([]change.Message, 0, len(byID))
	for _, m := range byID {
		m.IsDeleted = m.IsDeleted || deleted
		out = append(out, m)
	}
	slices.SortFunc(out, chatdb.Compare)
	p := page{deleted: deleted, hasMore: len(out) > limit}
	out = out[max(len(out)-limit, 0):]
	// The newest first, within MaxPageBytes.
	size, first := 0, len(out)
	for first > 0 {
		size += len(encode(out[first-1]))
		if size > MaxPageBytes && first < len(out) {
			p.hasMore = true
			break
		}
		first--
	}
	p.msgs = out[first:]
	return p, nil
}

// cursorJSON is a cursor's encoding before base64: opaque to clients, who
// only hand back what a page gave them.
type cursorJSON struct {
	CreatedAt time.Time `json:"t"`
	ID        string    `json:"id"`
}

func formatCursor(c chatdb.Cursor) string {
	return base64.RawURLEncoding.EncodeToString(encode(cursorJSON{c.CreatedAt, c.ID}))
}

// parseCursor decodes a cursor; "" is the zero cursor (the newest page).
func parseCursor(s string) (chatdb.Cursor, error) {
	if s == "" {
		return chatdb.Cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	var c cursorJSON
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || c.CreatedAt.IsZero() || !validChatID(c.ID) {
		return chatdb.Cursor{}, errBadCursor
	}
	return chatdb.Cursor{CreatedAt: c.CreatedAt, ID: c.ID}, nil
}

// cached returns the chat's messages and event from Redis, or from memory
// while Redis is down or does not answer in time.
func (s *Server) cached(ctx context.Context, chatID string) ([]change.Message, change.Chat, bool) {
	if !s.redis() {
		cctx, cancel := context.WithTimeout(ctx, cacheReadTimeout)
		defer cancel()
		msgs, err := s.cache.Messages(cctx, chatID)
		if err == nil {
			ev, ok, err := s.cache.Chat(cctx, chatID)
			if err == nil {
				return msgs, ev, ok
			}
		}
		s.metrics.cacheReadErrors.Inc()
	}
	ev, ok := s.mem.Chat(chatID)
	return s.mem.Messages(chatID), ev, ok
}

func (s *Server) syncStatus(c echo.Context) error {
	return c.JSON(http.StatusOK, s.status.Get())
}

// InstanceStatusJSON is GET /api/instance-status: whether this instance's
// live path delivers (Stalled empty) or why it does not.
type InstanceStatusJSON struct {
	Stalled string `json:"stalled,omitempty"`
}

func (s *Server) instanceStatus(c echo.Context) error {
	var st InstanceStatusJSON
	if s.cfg.Stalled != nil {
		if err := s.cfg.Stalled(); err != nil {
			st.Stalled = err.Error()
		}
	}
	return c.JSON(http.StatusOK, st)
}

// healthy answers 200 unless the process should be restarted.
func (s *Server) healthy(c echo.Context) error {
	if s.cfg.Live != nil {
		if err := s.cfg.Live(); err != nil {
			return c.String(http.StatusServiceUnavailable, err.Error()+"\n")
		}
	}
	return c.String(http.StatusOK, "ok\n")
}

// ready answers 200 when Postgres, Kafka (and Redis) answer, with the
// degraded parts listed; 503 when a required one does not.
func (s *Server) ready(c echo.Context) error {
	if s.cfg.Ready == nil {
		return c.String(http.StatusOK, "ok\n")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	degraded, err := s.cfg.Ready(ctx)
	if err != nil {
		return c.String(http.StatusServiceUnavailable, err.Error()+"\n")
	}
	if len(degraded) > 0 {
		return c.String(http.StatusOK, "degraded: "+strings.Join(degraded, ", ")+"\n")
	}
	return c.String(http.StatusOK, "ok\n")
}

// encode is json.Marshal for frames and bodies that always encode.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own structs of strings, numbers and times
	}
	return b
}
