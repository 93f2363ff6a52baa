package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"

	"github.com/chatpoc/chat-poc/apps/external/store"
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

// sendBuffer is how many outgoing frames a client may have queued. A browser
// that cannot keep up for that long is dropped rather than allowed to slow
// down everyone else's updates.
const sendBuffer = 256

// event is one server → client frame.
type event struct {
	Type     string          `json:"type"`
	ChatID   string          `json:"chatId,omitempty"`
	Messages []store.Message `json:"messages,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// wsClient is one WebSocket connection's subscription state and send queue.
type wsClient struct {
	send chan []byte
	// slow is closed by the hub when the client's queue overflowed; the
	// connection then closes with a policy-violation code.
	slow     chan struct{}
	slowOnce sync.Once
}

func newWSClient() *wsClient {
	return &wsClient{send: make(chan []byte, sendBuffer), slow: make(chan struct{})}
}

// Hub fans changes out to WebSocket subscribers. It owns the subscriber set:
// subscriptions per chat, and the set of clients subscribed to all chats.
type Hub struct {
	log *slog.Logger

	mu      sync.Mutex
	clients map[*wsClient]struct{}
	byChat  map[string]map[*wsClient]struct{}
	allChat map[*wsClient]struct{}

	dropped func() // counts a slow client dropped
}

// NewHub returns an empty hub. dropped is called for every client dropped
// because it fell behind.
func NewHub(log *slog.Logger, dropped func()) *Hub {
	return &Hub{
		log:     log,
		clients: map[*wsClient]struct{}{},
		byChat:  map[string]map[*wsClient]struct{}{},
		allChat: map[*wsClient]struct{}{},
		dropped: dropped,
	}
}

func (h *Hub) register(c *wsClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients[c] = struct{}{}
}

func (h *Hub) unregister(c *wsClient) {
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

// subscribe adds c to chatID's subscribers, or to every chat's when chatID is "".
func (h *Hub) subscribe(c *wsClient, chatID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if chatID == "" {
		h.allChat[c] = struct{}{}
		return
	}
	subs := h.byChat[chatID]
	if subs == nil {
		subs = map[*wsClient]struct{}{}
		h.byChat[chatID] = subs
	}
	subs[c] = struct{}{}
}

func (h *Hub) unsubscribe(c *wsClient, chatID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if chatID == "" {
		delete(h.allChat, c)
		return
	}
	delete(h.byChat[chatID], c)
	if len(h.byChat[chatID]) == 0 {
		delete(h.byChat, chatID)
	}
}

// Clients returns the number of connected WebSocket clients.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
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

// publish queues ev for the chat's subscribers and the all-chats subscribers
// (or for every client when everyone is set).
func (h *Hub) publish(ev event, chatID string, everyone bool) {
	frame, err := json.Marshal(ev)
	if err != nil {
		h.log.Error("encode websocket event", "type", ev.Type, "err", err)
		return
	}
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

// enqueue never blocks: a client whose queue is full is marked slow and will
// be disconnected by its writer.
func (h *Hub) enqueue(c *wsClient, frame []byte) {
	select {
	case c.send <- frame:
	default:
		c.slowOnce.Do(func() {
			close(c.slow)
			h.dropped()
		})
	}
}

// sendTo queues ev for one client (load and error replies).
func (h *Hub) sendTo(ctx context.Context, c *wsClient, ev event) {
	frame, err := json.Marshal(ev)
	if err != nil {
		h.log.ErrorContext(ctx, "encode websocket event", "type", ev.Type, "err", err)
		return
	}
	h.enqueue(c, frame)
}
