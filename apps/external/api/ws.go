package api

import (
	"context"
	"errors"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/chatpoc/chat-poc/internal/wshub"
)

func (s *Server) handleWS(c echo.Context) error {
	s.hub.Accept(c.Response(), c.Request(), s.cfg.AllowedOrigins, s.handleFrame)
	return nil
}

// handleFrame handles one client frame: sub or unsub.
func (s *Server) handleFrame(ctx context.Context, client *wshub.Client, f wshub.Frame) (websocket.StatusCode, string) {
	switch f.Type {
	case msgSub:
		s.subscribe(ctx, client, f.ID)
	case msgUnsub:
		if f.ID == "" || uuid.Validate(f.ID) != nil {
			s.hub.sendTo(client, event{Type: msgError, Error: "unsub needs the id of a chat"})
			return 0, ""
		}
		s.hub.Unsubscribe(client, f.ID)
	default:
		return websocket.StatusPolicyViolation, "unknown message type; use sub or unsub"
	}
	return 0, ""
}

// subscribe registers the subscription first and then sends the load, so no
// update can fall between the two; an update queued before the load is older
// than or equal to it, and clients apply messages by version.
func (s *Server) subscribe(ctx context.Context, client *wshub.Client, chatID string) {
	if chatID == "" {
		_ = s.hub.Subscribe(client, "") // all chats: never refused
		return
	}
	if uuid.Validate(chatID) != nil {
		s.hub.sendTo(client, event{Type: msgError, ChatID: chatID, Error: "chat id must be a UUID"})
		return
	}
	if err := s.hub.Subscribe(client, chatID); err != nil {
		s.hub.sendTo(client, event{Type: msgError, ChatID: chatID, Error: err.Error()})
		return
	}
	msgs, err := s.store.Messages(ctx, chatID)
	if err != nil {
		s.hub.Unsubscribe(client, chatID)
		msg := "could not load the chat"
		if errors.Is(err, errNotFound) {
			msg = "unknown chat"
		} else {
			s.log.ErrorContext(ctx, "load chat for websocket", "chat", chatID, "err", err)
		}
		s.hub.sendTo(client, event{Type: msgError, ChatID: chatID, Error: msg})
		return
	}
	s.hub.sendTo(client, event{Type: msgLoad, ChatID: chatID, Messages: nonNil(msgs)})
}
