package chatdb_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// TestReads checks what Chats and Messages return for chats in every state.
func TestReads(t *testing.T) {
	t.Parallel()
	db, _ := newDB(t)
	ctx := t.Context()
	before := time.Now()

	// Created at the same time, b and a are ordered by ID; c comes first by
	// creation time though posted last.
	b := msg("b", "live", 5, 5, "b", false)
	a := msg("a", "live", 5, 6, "a", false)
	c := msg("c", "live", 1, 7, "c", false)
	gone := msg("gone", "live", 8, 9, "", true)
	orphan := msg("o", "no-chat-yet", 2, 2, "before its chat", false)
	apply(t, db, chatdb.Batch{
		Chats: []change.Chat{chatNew("live", 1), chatNew("empty", 2), chatNew("deleted", 3), chatDelete("deleted", 4), chatNew("another", 10)},
		Messages: []change.Message{b, a, c, gone, orphan,
			msg("x", "deleted", 3, 3, "x", false)},
	})

	chats, err := db.Chats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ch := range chats {
		ids = append(ids, ch.ID)
		if ch.ReplicatedAt.Before(before.Add(-time.Minute)) || ch.ReplicatedAt.After(time.Now().Add(time.Minute)) {
			t.Errorf("chat %s replicated at %v, not around now", ch.ID, ch.ReplicatedAt)
		}
	}
	if want := []string{"another", "empty", "live"}; !slices.Equal(ids, want) {
		t.Errorf("Chats = %v, want %v (not deleted, by ID)", ids, want)
	}
	if chats[0].Version != 10 {
		t.Errorf("chat another has version %d, want 10", chats[0].Version)
	}

	tests := []struct {
		chat        string
		want        []change.Message
		wantDeleted bool
	}{
		{"live", []change.Message{c, a, b, gone}, false},
		{"empty", []change.Message{}, false},
		{"deleted", []change.Message{{ID: "x", ChatID: "deleted", Content: "x", CreatedAt: t0.Add(3 * time.Millisecond),
			UpdatedAt: t0.Add(3 * time.Millisecond), IsDeleted: true, Version: 3}}, true},
		{"no-chat-yet", []change.Message{orphan}, false},
	}
	for _, tt := range tests {
		got, deleted, err := db.Messages(ctx, tt.chat)
		if err != nil || deleted != tt.wantDeleted || !slices.Equal(got, tt.want) {
			t.Errorf("Messages(%s) = %+v, %v, %v;\nwant %+v, %v", tt.chat, got, deleted, err, tt.want, tt.wantDeleted)
		}
		if got == nil {
			t.Errorf("Messages(%s) returned a nil list, want an empty one", tt.chat)
		}
	}

	for _, chat := range []string{"unknown", ""} {
		if got, deleted, err := db.Messages(ctx, chat); !errors.Is(err, chatdb.ErrNotFound) {
			t.Errorf("Messages(%q) = %v, %v, %v; want ErrNotFound", chat, got, deleted, err)
		}
	}
}
