package live

import (
	"fmt"
	"strings"
	"testing"

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
	mem := NewMemory(messageBytes, chatBytes, reg)
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

	for _, tt := range []struct {
		name string
		got  float64
		want float64
	}{
		{"message evictions", metricValue(t, reg, "internal_memory_evictions_total", "message"), messages - 4},
		{"chat evictions", metricValue(t, reg, "internal_memory_evictions_total", "chat"), float64(chats - len(heldChats))},
		{"message bytes", metricValue(t, reg, "internal_memory_bytes", "message"), float64(msgBytes)},
		{"message entries", metricValue(t, reg, "internal_memory_entries", "message"), 4},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}

	// At the bound: a forgotten message's older version is new to memory
	// (Redis and each client's version floor keep it from clients).
	if !mem.PutMessage(change.Message{ID: "m00", ChatID: "c", Content: "old", Version: 1}) {
		t.Error("a forgotten message's older version was refused: memory still holds it")
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
