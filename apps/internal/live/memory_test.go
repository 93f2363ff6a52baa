package live

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatpoc/chat-poc/internal/change"
)

// Memory holds at most its bound in bytes of messages (of ~40 KB each, as a
// message may be) and of chat events, forgets the least recently written
// first, counts what it forgot and meters its size; a replaced version is
// counted once.
func TestMemoryIsBoundedByBytes(t *testing.T) {
	t.Parallel()
	const (
		messageBytes = 160 << 10 // four 40 KB messages and their overhead, not five
		chatBytes    = 4 << 10
		messages     = 50
		chats        = 100
	)
	reg := prometheus.NewRegistry()
	mem := NewMemory(time.Hour, messageBytes, chatBytes, reg)
	body := strings.Repeat("x", 40_000)
	for i := range messages {
		m := change.Message{ID: fmt.Sprintf("m%02d", i), ChatID: "c", Content: body, Version: 1}
		if !mem.PutMessage(m) {
			t.Fatalf("message %s refused", m.ID)
		}
		m.Version = 2 // a newer version replaces the entry, not adds to it
		if !mem.PutMessage(m) {
			t.Fatalf("message %s v2 refused", m.ID)
		}
	}
	for i := range chats {
		mem.PutChat(change.Chat{Type: change.ChatNew, ID: fmt.Sprintf("chat-%03d", i), Version: 1})
	}

	msgBytes, chBytes := mem.Size()
	if msgBytes > messageBytes || chBytes > chatBytes {
		t.Fatalf("Size = %d, %d bytes; bounds %d, %d", msgBytes, chBytes, messageBytes, chatBytes)
	}
	held := mem.Messages("c")
	if len(held) != 4 || held[len(held)-1].ID != fmt.Sprintf("m%02d", messages-1) {
		t.Fatalf("held %d messages (last %+v), want the 4 most recently written", len(held), held[len(held)-1].ID)
	}
	heldChats := mem.Chats()
	if want := chatBytes / (len("chat-000") + entryOverhead); len(heldChats) != want {
		t.Fatalf("held %d chat events, want %d", len(heldChats), want)
	}
	if _, ok := mem.Chat(fmt.Sprintf("chat-%03d", chats-1)); !ok {
		t.Error("the chat written last was forgotten")
	}
	if _, ok := mem.Chat("chat-000"); ok {
		t.Error("the chat written first is still held")
	}

	checkValues(t, []valueCheck{
		{"message evictions", metricValue(t, reg, "internal_memory_evictions_total", "message"), messages - 4},
		{"chat evictions", metricValue(t, reg, "internal_memory_evictions_total", "chat"), float64(chats - len(heldChats))},
		{"message bytes", metricValue(t, reg, "internal_memory_bytes", "message"), float64(msgBytes)},
		{"message entries", metricValue(t, reg, "internal_memory_entries", "message"), 4},
	})

	// At the bound: a forgotten message's older version is new to memory
	// (Redis and each client's version floor keep it from clients).
	if !mem.PutMessage(change.Message{ID: "m00", ChatID: "c", Content: "old", Version: 1}) {
		t.Error("a forgotten message's older version was refused: memory still holds it")
	}
}

// Memory forgets what was written longer than its window ago, messages and
// chat events alike, whatever room is left under its bounds, counts it, and
// never returns it: a soak's chats filled the 4 MiB bound for an hour.
func TestMemoryForgetsAfterItsWindow(t *testing.T) {
	t.Parallel()
	const ttl = 5 * time.Minute
	reg := prometheus.NewRegistry()
	mem := NewMemory(ttl, 1<<20, 1<<20, reg)
	clock := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	mem.now = func() time.Time { return clock }

	mem.PutMessage(change.Message{ID: "old", ChatID: "c", Content: "x", Version: 1})
	mem.PutChat(change.Chat{Type: change.ChatNew, ID: "old-chat", Version: 1})
	clock = clock.Add(ttl - time.Second)
	mem.PutMessage(change.Message{ID: "new", ChatID: "c", Content: "y", Version: 1})
	mem.PutChat(change.Chat{Type: change.ChatNew, ID: "new-chat", Version: 1})
	if got := len(mem.Messages("c")); got != 2 {
		t.Fatalf("within the window: %d messages held, want 2", got)
	}

	clock = clock.Add(2 * time.Second) // "old" and "old-chat" are ttl+1s old
	held := mem.Messages("c")
	if len(held) != 1 || held[0].ID != "new" {
		t.Fatalf("after the window: held %+v, want only the message written since", held)
	}
	if _, ok := mem.Chat("old-chat"); ok {
		t.Error("a chat event written before the window is still held")
	}
	if chats := mem.Chats(); len(chats) != 1 || chats[0].ID != "new-chat" {
		t.Errorf("Chats() = %+v, want only new-chat", chats)
	}
	msgs, chats := mem.All()
	if len(msgs) != 1 || len(chats) != 1 {
		t.Errorf("All() = %d messages, %d chats; want 1, 1", len(msgs), len(chats))
	}
	msgBytes, chatBytes := mem.Size()
	if want := int64(len("new") + len("c") + len("y") + entryOverhead); msgBytes != want {
		t.Errorf("message bytes = %d, want %d", msgBytes, want)
	}
	if want := int64(len("new-chat") + entryOverhead); chatBytes != want {
		t.Errorf("chat bytes = %d, want %d", chatBytes, want)
	}
	checkValues(t, []valueCheck{
		{"messages expired", metricValue(t, reg, "internal_memory_expired_total", "message"), 1},
		{"chats expired", metricValue(t, reg, "internal_memory_expired_total", "chat"), 1},
		{"message entries", metricValue(t, reg, "internal_memory_entries", "message"), 1},
		{"chat bytes", metricValue(t, reg, "internal_memory_bytes", "chat"), float64(chatBytes)},
		{"message evictions", metricValue(t, reg, "internal_memory_evictions_total", "message"), 0},
	})

	// A forgotten message's older version is new to memory again, as it is
	// to a Redis whose entry expired (each client's floor keeps it out).
	if !mem.PutMessage(change.Message{ID: "old", ChatID: "c", Content: "x", Version: 1}) {
		t.Error("an expired message's version was refused: memory still holds it")
	}
	// Rewriting an entry starts its window again.
	clock = clock.Add(ttl - time.Second)
	mem.PutMessage(change.Message{ID: "new", ChatID: "c", Content: "y2", Version: 2})
	clock = clock.Add(2 * time.Second)
	if held := mem.Messages("c"); len(held) != 1 || held[0].Version != 2 {
		t.Errorf("after rewriting: held %+v, want new v2 alone", held)
	}
}

// valueCheck is a figure read and the value it must have.
type valueCheck struct {
	name      string
	got, want float64
}

func checkValues(t *testing.T, checks []valueCheck) {
	t.Helper()
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// metricValue returns the value of counter or gauge name{kind}.
func metricValue(t *testing.T, reg *prometheus.Registry, name, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == name && m.GetLabel()[0].GetValue() == kind {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{kind=%q}", name, kind)
	return 0
}
