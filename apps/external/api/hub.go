package api

import (
	"encoding/json"
	"log/slog"

	"github.com/chatpoc/chat-poc/apps/external/store"
	"github.com/chatpoc/chat-poc/internal/wshub"
)

// Server → client WebSocket message types (compatible with the original).
const (
	msgLoad    = "load"
	msgUpdate  = "update"
	msgDelete  = "delete"
	msgNewChat = "newChat"
	msgError   = "error"
)

// Client → server WebSocket message types.
const (
	msgSub   = "sub"
	msgUnsub = "unsub"
)

// event is one server → client frame.
type event struct {
	Type     string          `json:"type"`
	ChatID   string          `json:"chatId,omitempty"`
	Messages []store.Message `json:"messages,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// Hub fans the service's changes out to WebSocket subscribers as events.
type Hub struct {
	*wshub.Hub
	log *slog.Logger
}

// NewHub returns an empty hub that counts into m.
func NewHub(log *slog.Logger, m *wshub.Metrics) *Hub {
	return &Hub{Hub: wshub.New(m, wshub.Limits{}), log: log}
}

// MessagesChanged sends an update with msgs to the chat's subscribers and to
// the all-chats subscribers.
func (h *Hub) MessagesChanged(chatID string, msgs ...store.Message) {
	h.publish(event{Type: msgUpdate, ChatID: chatID, Messages: msgs}, chatID, false)
}

// ChatCreated tells every client about a new chat.
func (h *Hub) ChatCreated(chatID string) {
	h.publish(event{Type: msgNewChat, ChatID: chatID}, chatID, true)
}

// ChatDeleted tells the chat's subscribers and the all-chats subscribers.
func (h *Hub) ChatDeleted(chatID string) {
	h.publish(event{Type: msgDelete, ChatID: chatID}, chatID, true)
}

func (h *Hub) publish(ev event, chatID string, everyone bool) {
	if frame, ok := h.encode(ev); ok {
		h.Publish(frame, chatID, everyone)
	}
}

// sendTo queues ev for one client (load and error replies).
func (h *Hub) sendTo(c *wshub.Client, ev event) {
	if frame, ok := h.encode(ev); ok {
		h.SendTo(c, frame)
	}
}

func (h *Hub) encode(ev event) ([]byte, bool) {
	frame, err := json.Marshal(ev)
	if err != nil {
		h.log.Error("encode websocket event", "type", ev.Type, "err", err)
		return nil, false
	}
	return frame, true
}
