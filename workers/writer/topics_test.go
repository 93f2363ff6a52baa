package main

import (
	"testing"
	"time"
)

// TestTopicPattern checks which topics a writer subscribes to — the two
// topics and their MirrorMaker 2 copies, nothing else — and what it takes
// each one to hold.
func TestTopicPattern(t *testing.T) {
	t.Parallel()
	w, err := NewWriter(nil, nil, nil, Options{
		Group: "g", Cluster: "a", MessageTopic: "chat-messages", ChatTopic: "chats", BatchMax: 1, Linger: time.Millisecond,
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		topic string
		match bool
		kind  kind
		base  string
	}{
		{"chat-messages", true, kindMessage, "chat-messages"},
		{"chats", true, kindChat, "chats"},
		{"b.chat-messages", true, kindMessage, "chat-messages"},
		{"b.chats", true, kindChat, "chats"},
		{"region_2.chats", true, kindChat, "chats"},
		{"chat-messages.dlq", false, 0, ""},
		{"b.chats.dlq", false, 0, ""},
		{"a.b.chats", false, 0, ""}, // a copy of a copy: MirrorMaker 2 never makes one
		{"xchats", false, 0, ""},
		{"heartbeats", false, 0, ""},
		{"mm2-offsets.b.internal", false, 0, ""},
		{"__consumer_offsets", false, 0, ""},
	}
	for _, tt := range tests {
		k, base, ok := w.kindOf(tt.topic)
		if ok != tt.match || w.topics.MatchString(tt.topic) != tt.match {
			t.Errorf("topic %q: matched %v, want %v", tt.topic, ok, tt.match)
			continue
		}
		if ok && (k != tt.kind || base != tt.base) {
			t.Errorf("topic %q: %v of %q, want %v of %q", tt.topic, k, base, tt.kind, tt.base)
		}
	}
}
