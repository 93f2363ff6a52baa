package change_test

import (
	"testing"

	"github.com/chatpoc/chat-poc/internal/change"
)

// TestTopics checks which topics a consumer subscribes to — the two topics
// and their MirrorMaker 2 copies, nothing else — and what it takes each one
// to hold.
func TestTopics(t *testing.T) {
	t.Parallel()
	topics := change.NewTopics("chat-messages", "chats")
	tests := []struct {
		topic string
		match bool
		kind  change.Kind
		base  string
	}{
		{"chat-messages", true, change.KindMessage, "chat-messages"},
		{"chats", true, change.KindChat, "chats"},
		{"b.chat-messages", true, change.KindMessage, "chat-messages"},
		{"b.chats", true, change.KindChat, "chats"},
		{"region_2.chats", true, change.KindChat, "chats"},
		{"chat-messages.dlq", false, 0, ""},
		{"b.chats.dlq", false, 0, ""},
		{"a.b.chats", false, 0, ""}, // a copy of a copy: MirrorMaker 2 never makes one
		{"xchats", false, 0, ""},
		{"heartbeats", false, 0, ""},
		{"mm2-offsets.b.internal", false, 0, ""},
		{"__consumer_offsets", false, 0, ""},
	}
	for _, tt := range tests {
		k, base, ok := topics.Parse(tt.topic)
		if ok != tt.match {
			t.Errorf("topic %q: matched %v, want %v", tt.topic, ok, tt.match)
			continue
		}
		if ok && (k != tt.kind || base != tt.base) {
			t.Errorf("topic %q: %v of %q, want %v of %q", tt.topic, k, base, tt.kind, tt.base)
		}
	}
	if s := topics.Subscription(); s[0] != '^' {
		t.Errorf("Subscription() = %q: librdkafka takes it as a name, not a pattern, without a leading ^", s)
	}
}
