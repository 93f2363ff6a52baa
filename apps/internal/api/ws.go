package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/wshub"
)

// WebSocket message types: client → server sub, unsub and more (an older
// page); server → client load (a chat's newest page and whether it is
// deleted), page (an older page), update (one message's new state), delete
// (a chat was deleted), newChat, error.
const (
	msgSub     = "sub"
	msgUnsub   = "unsub"
	msgMore    = "more"
	msgLoad    = "load"
	msgPage    = "page"
	msgUpdate  = "update"
	msgDelete  = "delete"
	msgNewChat = "newChat"
	msgError   = "error"
)

// Error codes of error frames, so that a client can tell what to do: a
// loadFailed or rateLimited request is worth retrying with backoff, an
// unknownChat load is not (the chat's first changes may come live).
const (
	codeUnknownChat   = "unknownChat"
	codeLoadFailed    = "loadFailed"
	codeRateLimited   = "rateLimited"
	codeBadRequest    = "badRequest"
	codeNotSubscribed = "notSubscribed"
	codeTooManySubs   = "tooManySubscriptions"
)

// event is one server → client frame.
type event struct {
	Type     string           `json:"type"`
	ChatID   string           `json:"chatId,omitempty"`
	Messages []change.Message `json:"messages,omitempty"`
	Deleted  bool             `json:"deleted,omitempty"`
	Error    string           `json:"error,omitempty"`
	// Code says what an error frame refused; Request is the request it
	// answers (sub or more).
	Code    string `json:"code,omitempty"`
	Request string `json:"request,omitempty"`
}

// pageEvent is a load or page frame: messages oldest first, whether older
// ones exist (hasMore) and the cursor to ask them with (before).
type pageEvent struct {
	Type     string           `json:"type"`
	ChatID   string           `json:"chatId"`
	Messages []change.Message `json:"messages"`
	Deleted  bool             `json:"deleted"`
	HasMore  bool             `json:"hasMore"`
	Before   string           `json:"before,omitempty"`
}

// moreFrame is a client's {"type":"more","chatId":…,"before":…}: the page
// before cursor before of a chat the client is subscribed to.
type moreFrame struct {
	ChatID string `json:"chatId"`
	Before string `json:"before"`
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

// handleFrame handles sub, unsub and more; anything else closes the
// connection with a policy violation. A sub or more beyond the connection's
// rate is answered with an error frame (code rateLimited) and not served.
func (s *Server) handleFrame(ctx context.Context, client *wshub.Client, f wshub.Frame) (websocket.StatusCode, string) {
	fail := func(chatID, code, msg string) {
		s.hub.SendTo(client, encode(event{Type: msgError, ChatID: chatID, Code: code, Request: f.Type, Error: msg}))
	}
	switch f.Type {
	case msgSub, msgUnsub:
		if !validChatID(f.ID) {
			fail("", codeBadRequest, f.Type+" needs the id of a chat")
			return 0, ""
		}
		if f.Type == msgUnsub {
			s.hub.Unsubscribe(client, f.ID)
			return 0, ""
		}
		if !s.hub.Allow(client) {
			fail(f.ID, codeRateLimited, "too many requests; retry later")
			return 0, ""
		}
		s.subscribe(ctx, client, f.ID)
		return 0, ""
	case msgMore:
		var m moreFrame
		_ = json.Unmarshal(f.Raw, &m) // f.Raw is a JSON object: Serve decoded it
		before, err := parseCursor(m.Before)
		switch {
		case !validChatID(m.ChatID) || m.Before == "" || err != nil:
			fail(m.ChatID, codeBadRequest, "more needs the chatId of a chat and a before cursor from its load or a page")
		case !s.hub.Subscribed(client, m.ChatID):
			fail(m.ChatID, codeNotSubscribed, "subscribe to the chat before asking for its older pages")
		case !s.hub.Allow(client):
			fail(m.ChatID, codeRateLimited, "too many requests; retry later")
		default:
			s.sendPage(ctx, client, msgPage, m.ChatID, before)
		}
		return 0, ""
	}
	return websocket.StatusPolicyViolation, "unknown message type; use sub, unsub or more"
}

// subscribe registers the subscription first and then sends the load (the
// chat's newest page), so no update can fall between the two; an update
// queued before the load may be older than it, and clients apply messages
// by version.
func (s *Server) subscribe(ctx context.Context, client *wshub.Client, chatID string) {
	if err := s.hub.Subscribe(client, chatID); err != nil {
		s.hub.SendTo(client, encode(event{Type: msgError, ChatID: chatID, Code: codeTooManySubs, Request: msgSub, Error: err.Error()}))
		return
	}
	s.sendPage(ctx, client, msgLoad, chatID, chatdb.Cursor{})
}

// sendPage sends a load or page frame (typ) of chatID's messages before
// before. A message an update queued before it already carried at a newer
// version is left out of it, so that no client is shown an older version
// after a newer one; after it, the hub sends no version of a message at or
// below the page's (a consumer behind the database, e.g. just restarted,
// replays older changes). A page that cannot be read is an error frame
// (code unknownChat or loadFailed; the client stays subscribed: the chat's
// first changes may be on their way).
func (s *Server) sendPage(ctx context.Context, client *wshub.Client, typ, chatID string, before chatdb.Cursor) {
	p, err := s.loadPage(ctx, chatID, before, s.cfg.PageSize)
	if err != nil {
		code, msg := codeUnknownChat, "unknown chat"
		if !errors.Is(err, errUnknownChat) {
			code, msg = codeLoadFailed, "could not load the chat"
			s.log.ErrorContext(ctx, "load chat for websocket", "chat", chatID, "err", err)
		}
		request := msgSub
		if typ == msgPage {
			request = msgMore
		}
		s.hub.SendTo(client, encode(event{Type: msgError, ChatID: chatID, Code: code, Request: request, Error: msg}))
		return
	}
	if p.deleted {
		s.hub.Ended(client, chatID) // the load may be ahead of this instance's consumer
	}
	versions := make(map[string]int64, len(p.msgs))
	for _, m := range p.msgs {
		versions[m.ID] = m.Version
	}
	s.hub.SendLoad(client, chatID, versions, func(omit map[string]bool) []byte {
		kept := p.msgs
		if len(omit) > 0 {
			kept = make([]change.Message, 0, len(p.msgs))
			for _, m := range p.msgs {
				if !omit[m.ID] {
					kept = append(kept, m)
				}
			}
		}
		return encode(pageEvent{Type: typ, ChatID: chatID, Messages: kept, Deleted: p.deleted, HasMore: p.hasMore, Before: p.before()})
	})
}
