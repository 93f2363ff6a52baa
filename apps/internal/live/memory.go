package live

import (
	"container/list"
	"sync"

	"github.com/chatpoc/chat-poc/internal/change"
)

// memoryCap bounds the messages Memory keeps: recent enough to stand in
// for Redis while it is down, small enough not to matter (~1 KiB each).
const memoryCap = 50_000

// Memory is the in-process stand-in for the Redis cache: the most recent
// versions of messages and chats this instance has seen, least recently
// written first out. While Redis is down it decides which changes are new
// and serves the loads; when Redis is back it is written back there.
type Memory struct {
	mu    sync.Mutex
	order *list.List // of *change.Message, most recently written at the back
	msgs  map[string]*list.Element
	chats map[string]change.Chat
}

// NewMemory returns an empty memory.
func NewMemory() *Memory {
	return &Memory{order: list.New(), msgs: map[string]*list.Element{}, chats: map[string]change.Chat{}}
}

// PutMessage keeps m if it is newer than the version held, and reports
// whether it did.
func (mem *Memory) PutMessage(m change.Message) bool {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	if e, ok := mem.msgs[m.ID]; ok {
		if e.Value.(*change.Message).Version >= m.Version {
			return false
		}
		mem.order.Remove(e)
	}
	mem.msgs[m.ID] = mem.order.PushBack(&m)
	for mem.order.Len() > memoryCap {
		oldest := mem.order.Front()
		mem.order.Remove(oldest)
		delete(mem.msgs, oldest.Value.(*change.Message).ID)
	}
	return true
}

// PutChat keeps c if it is newer than the chat's event held, and reports
// whether it did.
func (mem *Memory) PutChat(c change.Chat) bool {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	if old, ok := mem.chats[c.ID]; ok && old.Version >= c.Version {
		return false
	}
	mem.chats[c.ID] = c
	return true
}

// Messages returns the held messages of chat chatID.
func (mem *Memory) Messages(chatID string) []change.Message {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	var out []change.Message
	for e := mem.order.Front(); e != nil; e = e.Next() {
		if m := e.Value.(*change.Message); m.ChatID == chatID {
			out = append(out, *m)
		}
	}
	return out
}

// Chat returns the held event of chat id.
func (mem *Memory) Chat(id string) (change.Chat, bool) {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	c, ok := mem.chats[id]
	return c, ok
}

// Chats returns the held chat events.
func (mem *Memory) Chats() []change.Chat {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	out := make([]change.Chat, 0, len(mem.chats))
	for _, c := range mem.chats {
		out = append(out, c)
	}
	return out
}

// All returns every held message and chat event, for writing back to Redis.
func (mem *Memory) All() ([]change.Message, []change.Chat) {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	msgs := make([]change.Message, 0, mem.order.Len())
	for e := mem.order.Front(); e != nil; e = e.Next() {
		msgs = append(msgs, *e.Value.(*change.Message))
	}
	chats := make([]change.Chat, 0, len(mem.chats))
	for _, c := range mem.chats {
		chats = append(chats, c)
	}
	return msgs, chats
}
