package chatdb_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// permutations returns every order of xs.
func permutations[T any](xs []T) [][]T {
	if len(xs) <= 1 {
		return [][]T{slices.Clone(xs)}
	}
	var out [][]T
	for i := range xs {
		rest := slices.Concat(xs[:i:i], xs[i+1:])
		for _, p := range permutations(rest) {
			out = append(out, append([]T{xs[i]}, p...))
		}
	}
	return out
}

// TestApplyMessageVersionsInAnyOrder applies a message's create (v1), edit
// (v2) and delete (v3) in every order, with and without duplicates, one
// record per batch and all in one batch: the row always ends as v3, deleted,
// and every record that was not newer than the row is counted stale.
func TestApplyMessageVersionsInAnyOrder(t *testing.T) {
	t.Parallel()
	db, _ := newDB(t)
	versions := []change.Message{
		msg("m", "chat", 1, 1, "hello", false),
		msg("m", "chat", 1, 2, "hello, edited", false),
		msg("m", "chat", 1, 3, "", true),
	}
	names := map[int64]string{1: "create", 2: "edit", 3: "delete"}
	arrangements := map[string]func([]change.Message) []change.Message{
		"once": slices.Clone[[]change.Message],
		"each twice in a row": func(p []change.Message) []change.Message {
			return slices.Concat(p[:1], p[:1], p[1:2], p[1:2], p[2:], p[2:])
		},
		"whole sequence twice": func(p []change.Message) []change.Message { return slices.Concat(p, p) },
		"then the oldest again": func(p []change.Message) []change.Message {
			return slices.Concat(p, versions[:1])
		},
	}
	for _, perm := range permutations(versions) {
		var order []string
		for _, m := range perm {
			order = append(order, names[m.Version])
		}
		for arrangement, arrange := range arrangements {
			records := arrange(perm)
			for _, oneBatch := range []bool{false, true} {
				mode := "separate batches"
				if oneBatch {
					mode = "one batch"
				}
				name := fmt.Sprintf("%s %s %s", strings.Join(order, "-"), arrangement, mode)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					// Each subtest has its own message and chat IDs in the shared database.
					id := strings.ReplaceAll(name, " ", "_")
					records := slices.Clone(records)
					for i := range records {
						records[i].ID, records[i].ChatID = "m-"+id, "c-"+id
					}
					var got, want chatdb.Applied
					var batches [][]change.Message
					if oneBatch {
						batches = [][]change.Message{records}
					} else {
						for _, r := range records {
							batches = append(batches, []change.Message{r})
						}
					}
					m := newModel()
					for _, b := range batches {
						a := apply(t, db, chatdb.Batch{Messages: b})
						w := m.Apply(chatdb.Batch{Messages: b})
						got.MessagesWritten += a.MessagesWritten
						got.MessagesStale += a.MessagesStale
						want.MessagesWritten += w.MessagesWritten
						want.MessagesStale += w.MessagesStale
					}
					if got != want {
						t.Errorf("Applied in total = %+v, want %+v", got, want)
					}
					if got.MessagesWritten+got.MessagesStale != len(records) {
						t.Errorf("%d written + %d stale != %d records", got.MessagesWritten, got.MessagesStale, len(records))
					}
					wantRow := versions[2]
					wantRow.ID, wantRow.ChatID = "m-"+id, "c-"+id
					msgs, deleted := messagesOf(t, db, "c-"+id)
					if len(msgs) != 1 || msgs[0] != wantRow || deleted {
						t.Fatalf("Messages = %+v (chat deleted %v), want only %+v", msgs, deleted, wantRow)
					}
				})
			}
		}
	}
}

// TestApplyChatAndMessagesInAnyOrder applies a chat's events and its
// messages in the orders two topics and retries can deliver them.
func TestApplyChatAndMessagesInAnyOrder(t *testing.T) {
	t.Parallel()
	db, _ := newDB(t)
	// A chat created at v1 with message a (created v2, edited v4) and b
	// (created v3), deleted at v5.
	a2 := msg("a", "chat", 2, 2, "a", false)
	a4 := msg("a", "chat", 2, 4, "a, edited", false)
	b3 := msg("b", "chat", 3, 3, "b", false)
	deleted := func(m change.Message) change.Message { m.IsDeleted = true; return m }
	type step struct {
		batch chatdb.Batch
		want  chatdb.Applied
	}
	tests := []struct {
		name        string
		steps       []step
		wantListed  bool // among Chats
		wantDeleted bool // the chat row says deleted
		wantMsgs    []change.Message
	}{{
		name: "message before its chat",
		steps: []step{
			{chatdb.Batch{Messages: []change.Message{a2}}, chatdb.Applied{MessagesWritten: 1}},
			{chatdb.Batch{Chats: []change.Chat{chatNew("chat", 1)}}, chatdb.Applied{ChatsWritten: 1}},
		},
		wantListed: true, wantMsgs: []change.Message{a2},
	}, {
		name: "message and its chat in one batch",
		steps: []step{
			{chatdb.Batch{Messages: []change.Message{a2}, Chats: []change.Chat{chatNew("chat", 1)}}, chatdb.Applied{MessagesWritten: 1, ChatsWritten: 1}},
		},
		wantListed: true, wantMsgs: []change.Message{a2},
	}, {
		name: "chat delete soft-deletes the stored messages",
		steps: []step{
			{chatdb.Batch{Chats: []change.Chat{chatNew("chat", 1)}, Messages: []change.Message{a2, b3}}, chatdb.Applied{ChatsWritten: 1, MessagesWritten: 2}},
			{chatdb.Batch{Chats: []change.Chat{chatDelete("chat", 5)}}, chatdb.Applied{ChatsWritten: 1, MessagesDeletedWithChat: 2}},
		},
		wantDeleted: true, wantMsgs: []change.Message{deleted(a2), deleted(b3)},
	}, {
		name: "message after its chat's delete is stored deleted",
		steps: []step{
			{chatdb.Batch{Chats: []change.Chat{chatNew("chat", 1)}}, chatdb.Applied{ChatsWritten: 1}},
			{chatdb.Batch{Chats: []change.Chat{chatDelete("chat", 5)}}, chatdb.Applied{ChatsWritten: 1}},
			{chatdb.Batch{Messages: []change.Message{b3}}, chatdb.Applied{MessagesWritten: 1}},
		},
		wantDeleted: true, wantMsgs: []change.Message{deleted(b3)},
	}, {
		name: "message and its chat's delete in one batch",
		steps: []step{
			{chatdb.Batch{Messages: []change.Message{a2, b3}, Chats: []change.Chat{chatDelete("chat", 5)}}, chatdb.Applied{ChatsWritten: 1, MessagesWritten: 2}},
		},
		wantDeleted: true, wantMsgs: []change.Message{deleted(a2), deleted(b3)},
	}, {
		name: "chat delete before the chat's new stays deleted",
		steps: []step{
			{chatdb.Batch{Chats: []change.Chat{chatDelete("chat", 5)}}, chatdb.Applied{ChatsWritten: 1}},
			{chatdb.Batch{Chats: []change.Chat{chatNew("chat", 1)}}, chatdb.Applied{ChatsStale: 1}},
			{chatdb.Batch{Chats: []change.Chat{chatNew("chat", 1), chatDelete("chat", 5)}}, chatdb.Applied{ChatsStale: 2}},
		},
		wantDeleted: true, wantMsgs: []change.Message{},
	}, {
		name: "chat new and delete in one batch, delete first",
		steps: []step{
			{chatdb.Batch{Chats: []change.Chat{chatDelete("chat", 5), chatNew("chat", 1)}}, chatdb.Applied{ChatsWritten: 1, ChatsStale: 1}},
		},
		wantDeleted: true, wantMsgs: []change.Message{},
	}, {
		name: "deleted chat's older messages and edits arriving later are deleted",
		steps: []step{
			{chatdb.Batch{Chats: []change.Chat{chatNew("chat", 1)}, Messages: []change.Message{a2}}, chatdb.Applied{ChatsWritten: 1, MessagesWritten: 1}},
			{chatdb.Batch{Chats: []change.Chat{chatDelete("chat", 5)}}, chatdb.Applied{ChatsWritten: 1, MessagesDeletedWithChat: 1}},
			{chatdb.Batch{Messages: []change.Message{b3, a4}}, chatdb.Applied{MessagesWritten: 2}},
			{chatdb.Batch{Messages: []change.Message{a2, b3}}, chatdb.Applied{MessagesStale: 2}},
		},
		wantDeleted: true, wantMsgs: []change.Message{deleted(a4), deleted(b3)},
	}, {
		name: "chat new arriving after its delete and messages changes nothing",
		steps: []step{
			{chatdb.Batch{Messages: []change.Message{a4}}, chatdb.Applied{MessagesWritten: 1}},
			{chatdb.Batch{Chats: []change.Chat{chatDelete("chat", 5)}}, chatdb.Applied{ChatsWritten: 1, MessagesDeletedWithChat: 1}},
			{chatdb.Batch{Chats: []change.Chat{chatNew("chat", 1)}, Messages: []change.Message{b3, a2}}, chatdb.Applied{ChatsStale: 1, MessagesWritten: 1, MessagesStale: 1}},
		},
		wantDeleted: true, wantMsgs: []change.Message{deleted(a4), deleted(b3)},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Each case has its own chat and message IDs in the shared database.
			// (IDs allow letters, digits and "-_.:" only.)
			chat := "chat-" + strings.Map(func(r rune) rune {
				if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
					return r
				}
				return '-'
			}, tt.name)
			rename := func(m change.Message) change.Message {
				m.ID, m.ChatID = chat+":"+m.ID, chat
				return m
			}
			for i, s := range tt.steps {
				b := s.batch
				b.Messages = slices.Clone(b.Messages)
				for j := range b.Messages {
					b.Messages[j] = rename(b.Messages[j])
				}
				b.Chats = slices.Clone(b.Chats)
				for j := range b.Chats {
					b.Chats[j].ID = chat
				}
				if got := apply(t, db, b); got != s.want {
					t.Errorf("step %d: Applied = %+v, want %+v", i+1, got, s.want)
				}
			}
			if listed := slices.Contains(chatIDs(t, db), chat); listed != tt.wantListed {
				t.Errorf("chat among Chats = %v, want %v", listed, tt.wantListed)
			}
			msgs, deleted := messagesOf(t, db, chat)
			want := make([]change.Message, len(tt.wantMsgs))
			for i, m := range tt.wantMsgs {
				want[i] = rename(m)
			}
			if deleted != tt.wantDeleted || !slices.Equal(msgs, want) {
				t.Errorf("Messages = %+v, deleted %v;\nwant %+v, deleted %v", msgs, deleted, want, tt.wantDeleted)
			}
		})
	}
}

// TestApplyConcurrentChatDeleteAndMessages applies a chat's delete and new
// messages of it at the same time from separate goroutines, as two writers
// reading a topic and its mirrored copy do: whichever commits first, every
// message ends deleted.
func TestApplyConcurrentChatDeleteAndMessages(t *testing.T) {
	t.Parallel()
	db, pool := newDB(t)
	const chats, perChat = 60, 3
	var setup chatdb.Batch
	for c := range chats {
		setup.Chats = append(setup.Chats, chatNew(fmt.Sprintf("c%d", c), 1))
	}
	apply(t, db, setup)

	var wg sync.WaitGroup
	errs := make(chan error, 2*chats)
	for c := range chats {
		chat := fmt.Sprintf("c%d", c)
		var b chatdb.Batch
		for i := range perChat {
			b.Messages = append(b.Messages, msg(fmt.Sprintf("%s-m%d", chat, i), chat, int64(2+i), int64(2+i), "hi", false))
		}
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			if _, err := db.Apply(t.Context(), group, chatdb.Batch{Chats: []change.Chat{chatDelete(chat, 100)}}); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			<-start
			if _, err := db.Apply(t.Context(), group, b); err != nil {
				errs <- err
			}
		})
		close(start)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Apply: %v", err)
	}
	var visible int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM messages WHERE NOT is_deleted`).Scan(&visible); err != nil {
		t.Fatal(err)
	}
	var total int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM messages`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if visible != 0 || total != chats*perChat {
		t.Fatalf("%d of %d messages of deleted chats are not deleted (want 0 of %d)", visible, total, chats*perChat)
	}
}

// TestApplyConcurrentDuplicates applies every order of one message's
// versions from concurrent goroutines: the newest version wins.
func TestApplyConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	db, _ := newDB(t)
	versions := []change.Message{
		msg("m", "chat", 1, 1, "hello", false),
		msg("m", "chat", 1, 2, "hello, edited", false),
		msg("m", "chat", 1, 3, "", true),
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var written int
	var errs []error
	for _, perm := range permutations(versions) {
		wg.Go(func() {
			for _, m := range perm {
				a, err := db.Apply(t.Context(), group, chatdb.Batch{Messages: []change.Message{m}})
				mu.Lock()
				written += a.MessagesWritten
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if written < 1 || written > 3 {
		t.Errorf("%d records written, want 1 to 3 (each version at most once)", written)
	}
	if msgs, _ := messagesOf(t, db, "chat"); len(msgs) != 1 || msgs[0] != versions[2] {
		t.Fatalf("Messages = %+v, want only %+v", msgs, versions[2])
	}
}

// TestApplyRandomArrivals applies random histories' records shuffled, with
// duplicates, in random batches: the reads return the latest state of every
// chat and message, and Applied counts match.
func TestApplyRandomArrivals(t *testing.T) {
	t.Parallel()
	db, _ := newDB(t)
	for run := range 8 {
		seed := rand.Uint64()
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			t.Parallel()
			t.Logf("seed %d", seed)
			r := rand.New(rand.NewPCG(seed, uint64(run)))
			h := newHistory(r, fmt.Sprintf("run%d", run), 4, 150)
			msgs, chats := h.Arrivals(r, 30)
			m := newModel()
			for len(msgs)+len(chats) > 0 {
				var b chatdb.Batch
				n := min(r.IntN(20), len(msgs))
				b.Messages, msgs = msgs[:n], msgs[n:]
				n = min(r.IntN(4), len(chats))
				b.Chats, chats = chats[:n], chats[n:]
				got, want := apply(t, db, b), m.Apply(b)
				got.MessagesDeletedWithChat = 0 // not modelled
				if got != want {
					t.Fatalf("Applied = %+v, want %+v", got, want)
				}
			}
			m.Check(t, db, fmt.Sprintf("run%d-", run))
		})
	}
}

// TestApplyLargeBatch applies 2,000 records of a history, shuffled with
// duplicates, in one batch, and reads them back.
func TestApplyLargeBatch(t *testing.T) {
	t.Parallel()
	db, _ := newDB(t)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	h := newHistory(r, "large", 30, 2100)
	msgs, chats := h.Arrivals(r, 5)
	const records = 2000
	msgs = msgs[:min(len(msgs), records-len(chats))]
	b := chatdb.Batch{Messages: msgs, Chats: chats, Offsets: []chatdb.Advance{
		first(change.TopicChats, 0, int64(len(chats))),
		first(change.TopicMessages, 0, int64(len(msgs))),
	}}
	if n := len(b.Messages) + len(b.Chats); n != records {
		t.Fatalf("made %d records, want %d", n, records)
	}
	m := newModel()
	want := m.Apply(b)
	start := time.Now()
	got, err := db.Apply(t.Context(), group, b)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Apply of %d messages and %d chat events (%d distinct rows) took %v",
		len(b.Messages), len(b.Chats), m.Rows(), took)
	got.MessagesDeletedWithChat = 0 // the batch finds no stored messages
	if got != want {
		t.Errorf("Applied = %+v, want %+v", got, want)
	}
	m.Check(t, db, "large-")
	offsets, err := db.Offsets(t.Context(), group)
	wantOffsets := []chatdb.Offset{off(change.TopicMessages, 0, int64(len(msgs))), off(change.TopicChats, 0, int64(len(chats)))}
	if err != nil || !slices.Equal(offsets, wantOffsets) {
		t.Errorf("Offsets = %v, %v; wantOffsets %v", offsets, err, wantOffsets)
	}
}
