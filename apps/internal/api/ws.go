package api

import (
	"context"
	"log/slog"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/wshub"
)

// WebSocket message types: client → server sub and unsub; server → client
// load (a chat's messages and whether it is deleted), update (one message's
// new state), delete (a chat was deleted), newChat, error.
const (
	msgSub     = "sub"
	msgUnsub   = "unsub"
	msgLoad    = "load"
	msgUpdate  = "update"
	msgDelete  = "delete"
	msgNewChat = "newChat"
	msgError   = "error"
)

// event is one server → client frame.
type event struct {
	Type     string           `json:"type"`
	ChatID   string           `json:"chatId,omitempty"`
	Messages []change.Message `json:"messages,omitempty"`
	Deleted  bool             `json:"deleted,omitempty"`
	Error    string           `json:"error,omitempty"`
}

// Hub fans the new changes out to the WebSocket subscribers; it is the live
// consumer's Notifier.
type Hub struct {
	*wshub.Hub
	log *slog.Logger
}

// MessageChanged pushes m's new state to its chat's subscribers that have
// not been sent that version or a newer one (by their load, or earlier).
func (h *Hub) MessageChanged(m change.Message) {
	h.PublishVersion(encode(event{Type: msgUpdate, ChatID: m.ChatID, Messages: []change.Message{m}}), m.ChatID, m.ID, m.Version)
}

// ChatCreated tells every client about a new chat, except those a load
// showed it deleted.
func (h *Hub) ChatCreated(id string) {
	h.PublishNew(encode(event{Type: msgNewChat, ChatID: id}), id)
}

// ChatDeleted tells every client that a chat was deleted.
func (h *Hub) ChatDeleted(id string) {
	h.Publish(encode(event{Type: msgDelete, ChatID: id}), id, true)
}

func (s *Server) handleWS(c echo.Context) error {
	s.hub.Accept(c.Response(), c.Request(), s.cfg.AllowedOrigins, s.handleFrame)
	return nil
}

// handleFrame handles sub and unsub; anything else closes the connection
// with a policy violation.
func (s *Server) handleFrame(ctx context.Context, client *wshub.Client, f wshub.Frame) (websocket.StatusCode, string) {
	switch f.Type {
	case msgSub, msgUnsub:
		if !validChatID(f.ID) {
			s.hub.SendTo(client, encode(event{Type: msgError, Error: f.Type + " needs the id of a chat"}))
			return 0, ""
		}
		if f.Type == msgUnsub {
			s.hub.Unsubscribe(client, f.ID)
			return 0, ""
		}
		s.subscribe(ctx, client, f.ID)
		return 0, ""
	}
	return websocket.StatusPolicyViolation, "unknown message type; use sub or unsub"
}

// subscribe registers the subscription first and then sends the load, so no
// update can fall between the two; an update queued before the load may be
// older than it, and clients apply messages by version. A message an update
// queued before the load already carried at a newer version is left out of
// the load, so that no client is shown an older version after a newer one.
// After the load, the hub sends no version of a message at or below the
// load's (a consumer behind the database, e.g. just restarted, replays older
// changes).
func (s *Server) subscribe(ctx context.Context, client *wshub.Client, chatID string) {
	if err := s.hub.Subscribe(client, chatID); err != nil {
		s.hub.SendTo(client, encode(event{Type: msgError, ChatID: chatID, Error: err.Error()}))
		return
	}
	msgs, deleted, err := s.load(ctx, chatID)
	if err != nil {
		msg := "could not load the chat"
		if err == errUnknownChat {
			msg = "unknown chat"
		} else {
			s.log.ErrorContext(ctx, "load chat for websocket", "chat", chatID, "err", err)
		}
		// Still subscribed: the chat's first changes may be on their way.
		s.hub.SendTo(client, encode(event{Type: msgError, ChatID: chatID, Error: msg}))
		return
	}
	if msgs == nil {
		msgs = []change.Message{}
	}
	if deleted {
		s.hub.Ended(client, chatID) // the load may be ahead of this instance's consumer
	}
	versions := make(map[string]int64, len(msgs))
	for _, m := range msgs {
		versions[m.ID] = m.Version
	}
	s.hub.SendLoad(client, chatID, versions, func(omit map[string]bool) []byte {
		kept := msgs
		if len(omit) > 0 {
			kept = make([]change.Message, 0, len(msgs))
			for _, m := range msgs {
				if !omit[m.ID] {
					kept = append(kept, m)
				}
			}
		}
		return encode(event{Type: msgLoad, ChatID: chatID, Messages: kept, Deleted: deleted})
	})
}
