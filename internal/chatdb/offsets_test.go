package chatdb_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// TestOffsetsOnlyMoveForward stores offsets with batches: each group's
// offsets are its own, and a partition's offset never moves backwards, also
// when one batch carries several of them.
func TestOffsetsOnlyMoveForward(t *testing.T) {
	t.Parallel()
	db, _ := newDB(t)
	ctx := t.Context()
	offsets := func(group string) []chatdb.Offset {
		t.Helper()
		o, err := db.Offsets(ctx, group)
		if err != nil {
			t.Fatalf("Offsets(%s): %v", group, err)
		}
		return o
	}
	if o := offsets(group); len(o) != 0 {
		t.Fatalf("Offsets of a fresh database = %v, want none", o)
	}
	if a, err := db.Apply(ctx, group, chatdb.Batch{}); err != nil || a != (chatdb.Applied{}) {
		t.Fatalf("Apply of an empty batch = %+v, %v", a, err)
	}

	steps := []struct {
		name    string
		offsets []chatdb.Offset
		want    []chatdb.Offset
	}{{
		name:    "first offsets",
		offsets: []chatdb.Offset{off("chats", 0, 10), off("chat-messages", 1, 5)},
		want:    []chatdb.Offset{off("chat-messages", 1, 5), off("chats", 0, 10)},
	}, {
		name:    "a backwards offset is ignored, another partition added",
		offsets: []chatdb.Offset{off("chats", 0, 7), off("a.chats", 2, 3)},
		want:    []chatdb.Offset{off("a.chats", 2, 3), off("chat-messages", 1, 5), off("chats", 0, 10)},
	}, {
		name:    "forward",
		offsets: []chatdb.Offset{off("chats", 0, 12)},
		want:    []chatdb.Offset{off("a.chats", 2, 3), off("chat-messages", 1, 5), off("chats", 0, 12)},
	}, {
		name:    "several of one partition in a batch: the highest",
		offsets: []chatdb.Offset{off("chat-messages", 1, 8), off("chat-messages", 1, 20), off("chat-messages", 1, 9)},
		want:    []chatdb.Offset{off("a.chats", 2, 3), off("chat-messages", 1, 20), off("chats", 0, 12)},
	}}
	for i, s := range steps {
		// Each step also carries a record, stored in the same transaction.
		m := msg("m", "chat", 1, int64(i+1), s.name, false)
		a, err := db.Apply(ctx, group, chatdb.Batch{Messages: []change.Message{m}, Offsets: s.offsets})
		if err != nil || a.MessagesWritten != 1 {
			t.Fatalf("%s: Apply = %+v, %v", s.name, a, err)
		}
		if got := offsets(group); !slices.Equal(got, s.want) {
			t.Fatalf("%s: Offsets = %v, want %v", s.name, got, s.want)
		}
	}
	if o := offsets("other-group"); len(o) != 0 {
		t.Fatalf("Offsets of another group = %v, want none", o)
	}
	if _, err := db.Apply(ctx, "other-group", chatdb.Batch{Offsets: []chatdb.Offset{off("chats", 0, 1)}}); err != nil {
		t.Fatal(err)
	}
	if got, want := offsets("other-group"), []chatdb.Offset{off("chats", 0, 1)}; !slices.Equal(got, want) {
		t.Fatalf("Offsets of the other group = %v, want %v", got, want)
	}
	if got := offsets(group); !slices.Equal(got, steps[len(steps)-1].want) {
		t.Fatalf("the other group's offsets moved %s's: %v", group, got)
	}
}

// TestApplyRejectsBadBatchWritingNothing applies batches that each carry one
// malformed record or offset among good ones: Apply fails and writes none of
// the batch, neither rows nor offsets.
func TestApplyRejectsBadBatchWritingNothing(t *testing.T) {
	t.Parallel()
	db, pool := newDB(t)
	apply(t, db, chatdb.Batch{
		Messages: []change.Message{msg("m", "chat", 2, 2, "v2", false)},
		Chats:    []change.Chat{chatNew("chat", 1)},
		Offsets:  []chatdb.Offset{off("chat-messages", 0, 1), off("chats", 0, 1)},
	})
	before := dump(t, pool)

	// good is a batch that would change every table.
	good := func() chatdb.Batch {
		return chatdb.Batch{
			Messages: []change.Message{msg("m", "chat", 2, 3, "v3", false), msg("n", "chat", 4, 4, "n", false)},
			Chats:    []change.Chat{chatDelete("chat", 5)},
			Offsets:  []chatdb.Offset{off("chat-messages", 0, 3), off("chats", 0, 2)},
		}
	}
	withMessage := func(f func(*change.Message)) chatdb.Batch {
		b := good()
		m := msg("bad", "chat", 3, 3, "bad", false)
		f(&m)
		b.Messages = append(b.Messages, m)
		return b
	}
	withChat := func(c change.Chat) chatdb.Batch {
		b := good()
		b.Chats = append(b.Chats, c)
		return b
	}
	withOffset := func(o chatdb.Offset) chatdb.Batch {
		b := good()
		b.Offsets = append(b.Offsets, o)
		return b
	}
	tests := []struct {
		name        string
		group       string
		batch       chatdb.Batch
		wantInvalid bool // the error wraps change.ErrInvalid
	}{
		{"message without chat ID", group, withMessage(func(m *change.Message) { m.ChatID = "" }), true},
		{"message without ID", group, withMessage(func(m *change.Message) { m.ID = "" }), true},
		{"message with version 0", group, withMessage(func(m *change.Message) { m.Version = 0 }), true},
		{"message with a negative version", group, withMessage(func(m *change.Message) { m.Version = -3 }), true},
		{"message without createdAt", group, withMessage(func(m *change.Message) { m.CreatedAt = time.Time{} }), true},
		{"message with a NUL byte", group, withMessage(func(m *change.Message) { m.Content = "a\x00b" }), true},
		{"message with invalid UTF-8", group, withMessage(func(m *change.Message) { m.Content = "a\xffb" }), true},
		{"chat of unknown type", group, withChat(change.Chat{Type: "rename", ID: "chat", Version: 9}), true},
		{"chat with version 0", group, withChat(chatDelete("chat", 0)), true},
		{"chat without ID", group, withChat(chatNew("", 9)), true},
		{"offset without topic", group, withOffset(off("", 0, 9)), false},
		{"offset of a negative partition", group, withOffset(off("chats", -1, 9)), false},
		{"negative offset", group, withOffset(off("chats", 1, -1)), false},
		{"offsets without group", "", good(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := db.Apply(t.Context(), tt.group, tt.batch)
			if err == nil {
				t.Fatalf("Apply = %+v, want an error", a)
			}
			if errors.Is(err, change.ErrInvalid) != tt.wantInvalid {
				t.Errorf("Apply error %q wraps change.ErrInvalid: %v, want %v", err, !tt.wantInvalid, tt.wantInvalid)
			}
			if after := dump(t, pool); !slices.Equal(after, before) {
				t.Fatalf("a failed Apply changed the database:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
	// The good batch itself changes everything (so the checks above could
	// see a partial write).
	apply(t, db, good())
	if after := dump(t, pool); slices.Equal(after, before) {
		t.Fatal("the good batch changed nothing")
	}
}

// TestApplyIsOneTransaction makes the database refuse a batch's offsets,
// which Apply writes last: the batch's chats and messages are rolled back
// with them.
func TestApplyIsOneTransaction(t *testing.T) {
	t.Parallel()
	db, pool := newDB(t)
	apply(t, db, chatdb.Batch{
		Messages: []change.Message{msg("m", "chat", 2, 2, "v2", false)},
		Chats:    []change.Chat{chatNew("chat", 1)},
		Offsets:  []chatdb.Offset{off("chats", 0, 1)},
	})
	if _, err := pool.Exec(t.Context(), `ALTER TABLE consumer_offsets ADD CONSTRAINT test_refuse CHECK (topic <> 'refused')`); err != nil {
		t.Fatal(err)
	}
	before := dump(t, pool)
	_, err := db.Apply(t.Context(), group, chatdb.Batch{
		Messages: []change.Message{msg("m", "chat", 2, 3, "v3", false), msg("n", "chat", 4, 4, "n", false)},
		Chats:    []change.Chat{chatDelete("chat", 5)},
		Offsets:  []chatdb.Offset{off("chats", 0, 2), off("refused", 0, 1)},
	})
	if err == nil || !strings.Contains(err.Error(), "test_refuse") {
		t.Fatalf("Apply with a refused offset: %v, want the constraint's error", err)
	}
	if after := dump(t, pool); !slices.Equal(after, before) {
		t.Fatalf("a batch whose offsets failed changed the database:\nbefore %v\nafter  %v", before, after)
	}
}
