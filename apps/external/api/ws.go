package api

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// WebSocket limits and timings.
const (
	// wsReadLimit bounds one client frame; sub/unsub frames are tiny.
	wsReadLimit = 4 << 10
	// wsWriteTimeout bounds one frame write; a peer that does not read for
	// this long is gone or hopelessly slow.
	wsWriteTimeout = 10 * time.Second
	// wsPingPeriod keeps idle connections alive through proxies and detects
	// dead peers; a ping must be answered within wsWriteTimeout.
	wsPingPeriod = 30 * time.Second
)

// clientFrame is one client → server frame.
type clientFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

func (s *Server) handleWS(c echo.Context) error {
	conn, err := websocket.Accept(c.Response(), c.Request(), &websocket.AcceptOptions{
		OriginPatterns: s.cfg.AllowedOrigins, // same-origin is always allowed
	})
	if err != nil {
		return nil // Accept has written the HTTP error (e.g. 403 for a foreign Origin)
	}
	conn.SetReadLimit(wsReadLimit)
	s.metrics.wsClients.Inc()
	defer s.metrics.wsClients.Dec()

	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	client := newWSClient()
	s.hub.register(client)
	defer s.hub.unregister(client)

	go func() {
		status, reason := s.writeLoop(ctx, conn, client)
		conn.Close(status, reason)
		cancel()
	}()

	status, reason := s.readLoop(ctx, conn, client)
	conn.Close(status, reason)
	return nil
}

// readLoop handles client frames until the connection ends or a frame is
// invalid; it returns the close code and reason.
func (s *Server) readLoop(ctx context.Context, conn *websocket.Conn, client *wsClient) (websocket.StatusCode, string) {
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) || websocket.CloseStatus(err) == websocket.StatusMessageTooBig {
				return websocket.StatusMessageTooBig, "frame too large"
			}
			return websocket.StatusNormalClosure, ""
		}
		if typ != websocket.MessageText {
			s.metrics.wsBadFrames.Inc()
			return websocket.StatusUnsupportedData, "binary frames are not supported; send JSON text"
		}
		var f clientFrame
		if err := json.Unmarshal(data, &f); err != nil {
			s.metrics.wsBadFrames.Inc()
			return websocket.StatusInvalidFramePayloadData, "invalid JSON"
		}
		switch f.Type {
		case msgSub:
			s.subscribe(ctx, client, f.ID)
		case msgUnsub:
			if f.ID == "" || uuid.Validate(f.ID) != nil {
				s.hub.sendTo(ctx, client, event{Type: msgError, Error: "unsub needs the id of a chat"})
				continue
			}
			s.hub.unsubscribe(client, f.ID)
		default:
			s.metrics.wsBadFrames.Inc()
			return websocket.StatusPolicyViolation, "unknown message type; use sub or unsub"
		}
	}
}

// subscribe registers the subscription first and then sends the load, so no
// update can fall between the two; an update queued before the load is older
// than or equal to it, and clients apply messages by version.
func (s *Server) subscribe(ctx context.Context, client *wsClient, chatID string) {
	if chatID == "" {
		s.hub.subscribe(client, "")
		return
	}
	if uuid.Validate(chatID) != nil {
		s.hub.sendTo(ctx, client, event{Type: msgError, ChatID: chatID, Error: "chat id must be a UUID"})
		return
	}
	s.hub.subscribe(client, chatID)
	msgs, err := s.store.Messages(ctx, chatID)
	if err != nil {
		s.hub.unsubscribe(client, chatID)
		msg := "could not load the chat"
		if errors.Is(err, errNotFound) {
			msg = "unknown chat"
		} else {
			s.log.ErrorContext(ctx, "load chat for websocket", "chat", chatID, "err", err)
		}
		s.hub.sendTo(ctx, client, event{Type: msgError, ChatID: chatID, Error: msg})
		return
	}
	s.hub.sendTo(ctx, client, event{Type: msgLoad, ChatID: chatID, Messages: nonNil(msgs)})
}

// writeLoop writes queued frames and pings until the connection ends. It
// returns the close code: a client that fell behind is closed with a policy
// violation, never allowed to block others.
func (s *Server) writeLoop(ctx context.Context, conn *websocket.Conn, client *wsClient) (websocket.StatusCode, string) {
	ping := time.NewTicker(wsPingPeriod)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return websocket.StatusGoingAway, "server closing connection"
		case <-client.slow:
			return websocket.StatusPolicyViolation, "client too slow; reconnect and reload"
		case frame := <-client.send:
			wctx, cancel := context.WithTimeout(ctx, wsWriteTimeout)
			err := conn.Write(wctx, websocket.MessageText, frame)
			cancel()
			if err != nil {
				return websocket.StatusGoingAway, "write failed"
			}
		case <-ping.C:
			pctx, cancel := context.WithTimeout(ctx, wsWriteTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return websocket.StatusGoingAway, "ping timeout"
			}
		}
	}
}
