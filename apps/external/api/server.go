// Package api is the HTTP and WebSocket surface of the simulated third-party
// chat service: the REST API and WebSocket of the original external service
// (kept compatible), the pollable change feed the sync reads, fault injection,
// health and metrics.
package api

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chatpoc/chat-poc/apps/external/store"
	"github.com/chatpoc/chat-poc/internal/echoapp"
	"github.com/chatpoc/chat-poc/internal/service"
	"github.com/chatpoc/chat-poc/internal/wshub"
)

// Input limits.
const (
	// MaxBodyBytes bounds every request body; larger bodies get 413.
	MaxBodyBytes = 64 << 10
	// MaxContentRunes bounds a message's content; longer content gets 400.
	MaxContentRunes = 10_000
)

// Feed request limits.
const (
	defaultFeedLimit = 100
	maxFeedLimit     = 1000
	maxFeedWait      = 30 * time.Second
)

var errNotFound = store.ErrNotFound

// Store is what the API needs of the persistence layer.
type Store interface {
	ChatIDs(ctx context.Context) ([]string, error)
	CreateChat(ctx context.Context) (store.Chat, error)
	DeleteChat(ctx context.Context, chatID string) error
	Messages(ctx context.Context, chatID string) ([]store.Message, error)
	CreateMessage(ctx context.Context, chatID, content string) (store.Message, error)
	UpdateMessage(ctx context.Context, chatID, messageID, content string) (store.Message, error)
	DeleteMessage(ctx context.Context, chatID, messageID string) (store.Message, error)
	Changes(ctx context.Context, cursor string, limit int) ([]store.Change, string, error)
	Wait(ctx context.Context, cursor string) error
}

// Config is the API's share of the service configuration.
type Config struct {
	// AllowedOrigins are extra host patterns (e.g. "localhost:*") whose pages
	// may open the WebSocket; same-origin pages always may.
	AllowedOrigins []string
	// AdminToken enables /admin/faults for requests bearing it; empty disables it.
	AdminToken string
	// Faults are the faults injected from the start (normally none).
	Faults Faults
	// Ping checks the database for /readyz; nil means always ready.
	Ping func(context.Context) error
}

// Server serves the external service's HTTP surface.
type Server struct {
	echo    *echo.Echo
	store   Store
	hub     *Hub
	faults  *faultInjector
	log     *slog.Logger
	cfg     Config
	metrics *metrics
}

// New wires the routes. ui is the static browser UI served at /.
func New(st Store, ui fs.FS, cfg Config, log *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(reg)
	s := &Server{
		store:   st,
		log:     log,
		cfg:     cfg,
		metrics: m,
		faults:  newFaultInjector(cfg.Faults, m),
	}
	s.hub = NewHub(log, wshub.NewMetrics(reg, "external"))
	s.echo = echoapp.New("external", reg, s.handleError, strconv.Itoa(MaxBodyBytes/1024)+"K")
	e := s.echo

	// Faults apply to the API only. (Not an Echo group: a group with
	// middleware adds a catch-all route that would hide the UI at /*.)
	faulty := s.faults.middleware
	e.GET("/chats", s.listChats, faulty)
	e.POST("/chats", s.createChat, faulty)
	e.POST("/chat/:id", s.createMessage, faulty)
	e.DELETE("/chat/:id", s.deleteChat, faulty)
	e.PUT("/chat/:chatId/message/:messageId", s.updateMessage, faulty)
	e.DELETE("/chat/:chatId/message/:messageId", s.deleteMessage, faulty)
	e.GET("/api/changes", s.changes, faulty)
	e.GET("/ws", s.handleWS, faulty)

	e.GET("/admin/faults", s.getFaults, s.requireAdmin)
	e.PUT("/admin/faults", s.putFaults, s.requireAdmin)
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET("/readyz", s.ready)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	e.Any("/debug/pprof/*", echo.WrapHandler(service.Pprof()))
	e.GET("/*", echo.WrapHandler(http.FileServerFS(ui)))
	return s
}

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Hub returns the WebSocket hub.
func (s *Server) Hub() *Hub { return s.hub }

// apiError is the JSON body of every error response.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"` // machine-readable where a client must react (feed cursors)
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
		if status == http.StatusRequestEntityTooLarge {
			body.Error = "request body larger than " + strconv.Itoa(MaxBodyBytes) + " bytes"
		}
	case errors.Is(err, store.ErrNotFound):
		status, body.Error = http.StatusNotFound, "not found"
	case errors.Is(err, store.ErrBadContent):
		status, body.Error = http.StatusBadRequest, "content must be valid UTF-8 without NUL characters"
	case errors.Is(err, store.ErrClosed):
		status, body.Error = http.StatusServiceUnavailable, "shutting down; retry"
	case errors.Is(err, store.ErrBadCursor):
		status, body = http.StatusBadRequest, apiError{Error: "malformed cursor: restart from a cursor the feed returned, or from none", Code: "bad_cursor"}
	case errors.Is(err, store.ErrCursorExpired):
		status, body = http.StatusGone, apiError{Error: "cursor expired: it points before the feed's retained history", Code: "cursor_expired"}
	case errors.Is(err, context.Canceled):
		status = 499 // client went away; nobody reads the response
	default:
		s.log.ErrorContext(c.Request().Context(), "request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, body)
}

func badRequest(msg string) error { return echo.NewHTTPError(http.StatusBadRequest, msg) }

// uuidParam returns the path parameter name, which must be a UUID.
func uuidParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if uuid.Validate(v) != nil {
		return "", badRequest(name + " must be a UUID")
	}
	return v, nil
}

// contentBody decodes {"content": "..."}.
func contentBody(c echo.Context) (string, error) {
	var body struct {
		Content *string `json:"content"`
	}
	if err := (&echo.DefaultBinder{}).BindBody(c, &body); err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
			return "", err
		}
		return "", badRequest(`body must be JSON {"content": "..."}`)
	}
	switch {
	case body.Content == nil:
		return "", badRequest(`content is required and must be a string`)
	case !utf8.ValidString(*body.Content):
		return "", badRequest("content must be valid UTF-8")
	case utf8.RuneCountInString(*body.Content) > MaxContentRunes:
		return "", badRequest("content longer than " + strconv.Itoa(MaxContentRunes) + " characters")
	}
	return *body.Content, nil
}

func (s *Server) listChats(c echo.Context) error {
	ids, err := s.store.ChatIDs(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, nonNil(ids))
}

func (s *Server) createChat(c echo.Context) error {
	chat, err := s.store.CreateChat(c.Request().Context())
	if err != nil {
		return err
	}
	s.hub.ChatCreated(chat.ID)
	return c.JSON(http.StatusCreated, chat)
}

func (s *Server) deleteChat(c echo.Context) error {
	id, err := uuidParam(c, "id")
	if err != nil {
		return err
	}
	if err := s.store.DeleteChat(c.Request().Context(), id); err != nil {
		return err
	}
	s.hub.ChatDeleted(id)
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) createMessage(c echo.Context) error {
	chatID, err := uuidParam(c, "id")
	if err != nil {
		return err
	}
	content, err := contentBody(c)
	if err != nil {
		return err
	}
	msg, err := s.store.CreateMessage(c.Request().Context(), chatID, content)
	if err != nil {
		return err
	}
	s.hub.MessagesChanged(chatID, msg)
	return c.JSON(http.StatusCreated, msg)
}

// messageParams returns the :chatId and :messageId path parameters.
func messageParams(c echo.Context) (chatID, msgID string, err error) {
	if chatID, err = uuidParam(c, "chatId"); err != nil {
		return "", "", err
	}
	if msgID, err = uuidParam(c, "messageId"); err != nil {
		return "", "", err
	}
	return chatID, msgID, nil
}

func (s *Server) updateMessage(c echo.Context) error {
	chatID, msgID, err := messageParams(c)
	if err != nil {
		return err
	}
	content, err := contentBody(c)
	if err != nil {
		return err
	}
	msg, err := s.store.UpdateMessage(c.Request().Context(), chatID, msgID, content)
	if err != nil {
		return err
	}
	s.hub.MessagesChanged(chatID, msg)
	return c.JSON(http.StatusOK, msg)
}

func (s *Server) deleteMessage(c echo.Context) error {
	chatID, msgID, err := messageParams(c)
	if err != nil {
		return err
	}
	msg, err := s.store.DeleteMessage(c.Request().Context(), chatID, msgID)
	if err != nil {
		return err
	}
	s.hub.MessagesChanged(chatID, msg)
	return c.NoContent(http.StatusNoContent)
}

// feedPage is the change feed's response.
type feedPage struct {
	Changes []store.Change `json:"changes"`
	Cursor  string         `json:"cursor"`
}

// changes serves GET /api/changes?cursor=&limit=&wait=: the changes after
// cursor, long-polling up to wait for the first one.
func (s *Server) changes(c echo.Context) error {
	q := c.QueryParams()
	limit := defaultFeedLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxFeedLimit {
			return badRequest("limit must be an integer from 1 to " + strconv.Itoa(maxFeedLimit))
		}
		limit = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > maxFeedWait {
			return badRequest("wait must be a duration from 0s to " + maxFeedWait.String() + ", e.g. 25s")
		}
		wait = d
	}
	cursor := q.Get("cursor")
	ctx := c.Request().Context()
	if s.faults.feedPaused() {
		return c.JSON(http.StatusOK, feedPage{Changes: []store.Change{}, Cursor: cursor})
	}

	changes, next, err := s.store.Changes(ctx, cursor, limit)
	if err != nil {
		return err
	}
	if len(changes) == 0 && wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, wait)
		err := s.store.Wait(wctx, cursor)
		cancel()
		switch {
		case err == nil && s.faults.feedPaused():
			// Paused while this poll waited: as paused as a new poll.
			return c.JSON(http.StatusOK, feedPage{Changes: []store.Change{}, Cursor: cursor})
		case err == nil:
			if changes, next, err = s.store.Changes(ctx, cursor, limit); err != nil {
				return err
			}
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			// waited the whole time: an empty page
		default:
			return err
		}
	}
	s.metrics.feedChanges.Add(float64(len(changes)))
	page := feedPage{Changes: nonNil(changes), Cursor: next}
	if poison := s.faults.feedPoison(); len(poison) > 0 {
		body, n, err := poisonedPage(page, poison)
		if err != nil {
			return err
		}
		s.metrics.faults.WithLabelValues("poison").Add(float64(n))
		return c.JSONBlob(http.StatusOK, body)
	}
	return c.JSON(http.StatusOK, page)
}

func (s *Server) ready(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if s.cfg.Ping == nil {
		return c.String(http.StatusOK, "ok\n")
	}
	if err := s.cfg.Ping(ctx); err != nil {
		s.log.WarnContext(ctx, "not ready", "err", err)
		return c.JSON(http.StatusServiceUnavailable, apiError{Error: "database unreachable"})
	}
	return c.String(http.StatusOK, "ok\n")
}

// nonNil makes empty results encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
