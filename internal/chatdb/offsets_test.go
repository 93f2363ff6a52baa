package chatdb_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// TestOffsetsAdvanceFromWhereTheyAre stores offsets with batches. An advance
// is a compare-and-set: a batch whose advance does not start where the
// partition's offset is stored (a consumer behind after a rebalance, or
// ahead after a failover lost commits) fails with ErrOffsetMoved, naming the
// partition, and writes nothing; each group's offsets are its own.
func TestOffsetsAdvanceFromWhereTheyAre(t *testing.T) {
	t.Parallel()
	db, pool := newDB(t)
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
		offsets []chatdb.Advance
		moved   string // the partitions ErrOffsetMoved names; empty: Apply succeeds
		want    []chatdb.Offset
	}{{
		name:    "first offsets",
		offsets: []chatdb.Advance{first("chats", 0, 10), first("chat-messages", 1, 5)},
		want:    []chatdb.Offset{off("chat-messages", 1, 5), off("chats", 0, 10)},
	}, {
		name:    "a first offset where one is stored",
		offsets: []chatdb.Advance{first("chats", 0, 12), first("a.chats", 2, 3)},
		moved:   "chats[0] (expected at -1)",
		want:    []chatdb.Offset{off("chat-messages", 1, 5), off("chats", 0, 10)},
	}, {
		name:    "an advance from behind the stored offset",
		offsets: []chatdb.Advance{adv("chats", 0, 7, 11), first("a.chats", 2, 3)},
		moved:   "chats[0] (expected at 7)",
		want:    []chatdb.Offset{off("chat-messages", 1, 5), off("chats", 0, 10)},
	}, {
		name:    "an advance from ahead of the stored offset, another partition moved too",
		offsets: []chatdb.Advance{adv("chats", 0, 12, 14), adv("chat-messages", 1, 6, 9), first("a.chats", 2, 3)},
		moved:   "chats[0] (expected at 12), chat-messages[1] (expected at 6)",
		want:    []chatdb.Offset{off("chat-messages", 1, 5), off("chats", 0, 10)},
	}, {
		name:    "an advance of a partition without an offset",
		offsets: []chatdb.Advance{adv("a.chats", 2, 0, 3)},
		moved:   "a.chats[2] (expected at 0)",
		want:    []chatdb.Offset{off("chat-messages", 1, 5), off("chats", 0, 10)},
	}, {
		name:    "forward from the stored offsets, and a first one",
		offsets: []chatdb.Advance{adv("chats", 0, 10, 12), first("a.chats", 2, 3)},
		want:    []chatdb.Offset{off("a.chats", 2, 3), off("chat-messages", 1, 5), off("chats", 0, 12)},
	}, {
		name:    "topic IDs kept with the offsets, a first one's too",
		offsets: []chatdb.Advance{advWithID(adv("chats", 0, 12, 13), "id-1"), advWithID(first("b.chats", 0, 4), "id-b")},
		want: []chatdb.Offset{off("a.chats", 2, 3), offWithID(off("b.chats", 0, 4), "id-b"),
			off("chat-messages", 1, 5), offWithID(off("chats", 0, 13), "id-1")},
	}, {
		name:    "an advance without a topic ID keeps the stored one",
		offsets: []chatdb.Advance{adv("chats", 0, 13, 14)},
		want: []chatdb.Offset{off("a.chats", 2, 3), offWithID(off("b.chats", 0, 4), "id-b"),
			off("chat-messages", 1, 5), offWithID(off("chats", 0, 14), "id-1")},
	}, {
		name:    "an advance with another topic ID replaces it",
		offsets: []chatdb.Advance{advWithID(adv("chats", 0, 14, 15), "id-2")},
		want: []chatdb.Offset{off("a.chats", 2, 3), offWithID(off("b.chats", 0, 4), "id-b"),
			off("chat-messages", 1, 5), offWithID(off("chats", 0, 15), "id-2")},
	}}
	for i, s := range steps {
		// Each step also carries a record, stored in the same transaction
		// or not at all.
		m := msg("m", "chat", 1, int64(i+1), s.name, false)
		before := dump(t, pool)
		a, err := db.Apply(ctx, group, chatdb.Batch{Messages: []change.Message{m}, Offsets: s.offsets})
		switch {
		case s.moved == "" && (err != nil || a.MessagesWritten != 1):
			t.Fatalf("%s: Apply = %+v, %v", s.name, a, err)
		case s.moved != "" && (!errors.Is(err, chatdb.ErrOffsetMoved) || !strings.HasSuffix(err.Error(), ": "+s.moved)):
			t.Fatalf("%s: Apply = %+v, %v; want ErrOffsetMoved naming %s", s.name, a, err, s.moved)
		case s.moved != "" && !slices.Equal(dump(t, pool), before):
			t.Fatalf("%s: a batch whose offset moved changed the database", s.name)
		}
		if got := offsets(group); !slices.Equal(got, s.want) {
			t.Fatalf("%s: Offsets = %v, want %v", s.name, got, s.want)
		}
	}
	if o := offsets("other-group"); len(o) != 0 {
		t.Fatalf("Offsets of another group = %v, want none", o)
	}
	if _, err := db.Apply(ctx, "other-group", chatdb.Batch{Offsets: []chatdb.Advance{first("chats", 0, 1)}}); err != nil {
		t.Fatal(err)
	}
	if got, want := offsets("other-group"), []chatdb.Offset{off("chats", 0, 1)}; !slices.Equal(got, want) {
		t.Fatalf("Offsets of the other group = %v, want %v", got, want)
	}
	if got := offsets(group); !slices.Equal(got, steps[len(steps)-1].want) {
		t.Fatalf("the other group's offsets moved %s's: %v", group, got)
	}
}

// TestConcurrentAdvancesOfOnePartition races consumers that all believe
// they own one partition at the same stored offset (a rebalance in flight):
// exactly one batch is committed, every other fails with ErrOffsetMoved.
func TestConcurrentAdvancesOfOnePartition(t *testing.T) {
	t.Parallel()
	db, _ := newDB(t)
	apply(t, db, chatdb.Batch{Offsets: []chatdb.Advance{first("chats", 0, 1)}})
	const consumers = 8
	errs := make(chan error, consumers)
	for i := range consumers {
		go func() {
			_, err := db.Apply(t.Context(), group, chatdb.Batch{
				Messages: []change.Message{msg(fmt.Sprintf("m%d", i), "chat", 1, 1, "x", false)},
				Offsets:  []chatdb.Advance{adv("chats", 0, 1, int64(10+i))},
			})
			errs <- err
		}()
	}
	won := 0
	for range consumers {
		switch err := <-errs; {
		case err == nil:
			won++
		case !errors.Is(err, chatdb.ErrOffsetMoved):
			t.Errorf("Apply: %v, want nil or ErrOffsetMoved", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent advances from one offset committed, want 1", won, consumers)
	}
	offsets, err := db.Offsets(t.Context(), group)
	if err != nil || len(offsets) != 1 || offsets[0].Next < 10 {
		t.Fatalf("Offsets = %v, %v; want chats[0] at one winner's offset", offsets, err)
	}
	msgs, _ := messagesOf(t, db, "chat")
	if len(msgs) != 1 || msgs[0].ID != fmt.Sprintf("m%d", offsets[0].Next-10) {
		t.Fatalf("stored messages %v, want only the winner's (offset %d)", msgs, offsets[0].Next)
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
		Offsets:  []chatdb.Advance{first("chat-messages", 0, 1), first("chats", 0, 1)},
	})
	before := dump(t, pool)

	// good is a batch that would change every table.
	good := func() chatdb.Batch {
		return chatdb.Batch{
			Messages: []change.Message{msg("m", "chat", 2, 3, "v3", false), msg("n", "chat", 4, 4, "n", false)},
			Chats:    []change.Chat{chatDelete("chat", 5)},
			Offsets:  []chatdb.Advance{adv("chat-messages", 0, 1, 3), adv("chats", 0, 1, 2)},
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
	withOffset := func(o chatdb.Advance) chatdb.Batch {
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
		{"offset without topic", group, withOffset(first("", 0, 9)), false},
		{"offset of a negative partition", group, withOffset(first("chats", -1, 9)), false},
		{"advance from below NoOffset", group, withOffset(adv("chats", 1, -2, 3)), false},
		{"advance that does not move forward", group, withOffset(adv("chats", 1, 4, 4)), false},
		{"two advances of one partition", group, withOffset(adv("chats", 0, 2, 3)), false},
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

// TestApplyIsOneTransaction makes the database refuse one of a batch's
// offsets: the batch's chats, messages and other offsets are rolled back with
// it.
func TestApplyIsOneTransaction(t *testing.T) {
	t.Parallel()
	db, pool := newDB(t)
	apply(t, db, chatdb.Batch{
		Messages: []change.Message{msg("m", "chat", 2, 2, "v2", false)},
		Chats:    []change.Chat{chatNew("chat", 1)},
		Offsets:  []chatdb.Advance{first("chats", 0, 1)},
	})
	if _, err := pool.Exec(t.Context(), `ALTER TABLE consumer_offsets ADD CONSTRAINT test_refuse CHECK (topic <> 'refused')`); err != nil {
		t.Fatal(err)
	}
	before := dump(t, pool)
	_, err := db.Apply(t.Context(), group, chatdb.Batch{
		Messages: []change.Message{msg("m", "chat", 2, 3, "v3", false), msg("n", "chat", 4, 4, "n", false)},
		Chats:    []change.Chat{chatDelete("chat", 5)},
		Offsets:  []chatdb.Advance{adv("chats", 0, 1, 2), first("refused", 0, 1)},
	})
	if err == nil || !strings.Contains(err.Error(), "test_refuse") {
		t.Fatalf("Apply with a refused offset: %v, want the constraint's error", err)
	}
	if after := dump(t, pool); !slices.Equal(after, before) {
		t.Fatalf("a batch whose offsets failed changed the database:\nbefore %v\nafter  %v", before, after)
	}
}
