package chatdb_test

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// group is the consumer group the tests store offsets for.
const group = "chat-writer"

// openPool opens a pool on dsn, closed when the test ends.
func openPool(t *testing.T, dsn string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	return stacktest.Pool(t, dsn, maxConns)
}

// newDB returns a DB on a fresh, migrated database of the shared stack, with
// its pool.
func newDB(t *testing.T) (*chatdb.DB, *pgxpool.Pool) {
	t.Helper()
	pool := openPool(t, stacktest.FreshDatabase(t, stacktest.Connect(t)), 8)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := chatdb.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return chatdb.New(pool), pool
}

// apply applies b for group and fails the test if that fails.
func apply(t *testing.T, db *chatdb.DB, b chatdb.Batch) chatdb.Applied {
	t.Helper()
	a, err := db.Apply(t.Context(), group, b)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return a
}

// t0 is when the tests' messages were created, to the microsecond as
// Postgres stores it.
var t0 = time.Date(2025, 3, 4, 5, 6, 7, 891011000, time.UTC)

// msg is version v of message id of chat chatID: created at t0 plus the
// milliseconds of its creating version, updated at t0 plus v milliseconds.
func msg(id, chatID string, created, v int64, content string, deleted bool) change.Message {
	return change.Message{
		ID: id, ChatID: chatID, Content: content,
		CreatedAt: t0.Add(time.Duration(created) * time.Millisecond),
		UpdatedAt: t0.Add(time.Duration(v) * time.Millisecond),
		IsDeleted: deleted, Version: v,
	}
}

func off(topic string, partition int32, next int64) chatdb.Offset {
	return chatdb.Offset{Topic: topic, Partition: partition, Next: next}
}

// adv advances partition topic[partition] from offset from to offset to.
func adv(topic string, partition int32, from, to int64) chatdb.Advance {
	return chatdb.Advance{Topic: topic, Partition: partition, From: from, To: to}
}

// first stores partition topic[partition]'s first offset, next.
func first(topic string, partition int32, next int64) chatdb.Advance {
	return adv(topic, partition, chatdb.NoOffset, next)
}

func chatNew(id string, v int64) change.Chat {
	return change.Chat{Type: change.ChatNew, ID: id, Version: v}
}

func chatDelete(id string, v int64) change.Chat {
	return change.Chat{Type: change.ChatDelete, ID: id, Version: v}
}

// messagesOf reads chat chatID and fails the test if that fails.
func messagesOf(t *testing.T, db *chatdb.DB, chatID string) ([]change.Message, bool) {
	t.Helper()
	msgs, deleted, err := db.Messages(t.Context(), chatID)
	if err != nil {
		t.Fatalf("Messages(%s): %v", chatID, err)
	}
	return msgs, deleted
}

// chatIDs reads the IDs of the chats that are not deleted.
func chatIDs(t *testing.T, db *chatdb.DB) []string {
	t.Helper()
	chats, err := db.Chats(t.Context())
	if err != nil {
		t.Fatalf("Chats: %v", err)
	}
	ids := make([]string, len(chats))
	for i, c := range chats {
		ids[i] = c.ID
	}
	return ids
}

// dump returns every row of every table, replication times included, so
// that a test can tell whether anything at all was written.
func dump(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT format('chat %s %s %s %s', id, is_deleted, version, replicated_at) FROM chats ORDER BY id`,
		`SELECT format('message %s %s %L %s %s %s %s %s', id, chat_id, content, created_at, updated_at, is_deleted, version, replicated_at)
         FROM messages ORDER BY id`,
		`SELECT format('offset %s %s %s %s', group_id, topic, partition, next_offset) FROM consumer_offsets
         ORDER BY group_id, topic, partition`,
	} {
		rows, err := pool.Query(t.Context(), q)
		if err != nil {
			t.Fatalf("dump: %v", err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatalf("dump: %v", err)
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("dump: %v", err)
		}
	}
	return out
}

// history is a made-up history of external: chats created, messages posted,
// edited and deleted in them, some chats deleted, every change with the next
// version. Records returns its change records in the order they happened.
type history struct {
	msgs  []change.Message
	chats []change.Chat
}

// newHistory makes a random history of about records changes in chats chats
// named prefix-cN.
func newHistory(r *rand.Rand, prefix string, chats, records int) history {
	var h history
	var v int64
	next := func() int64 { v++; return v }
	type live struct {
		id, chat string
		created  int64
	}
	var open []string
	var msgs []live
	for n := 0; len(h.msgs)+len(h.chats) < records; n++ {
		switch p := r.IntN(100); {
		case len(open) < chats && (len(open) == 0 || p < 5):
			id := fmt.Sprintf("%s-c%d", prefix, len(h.chats))
			h.chats = append(h.chats, chatNew(id, next()))
			open = append(open, id)
		case p < 7 && len(open) > 1: // delete a chat; its messages go with it
			i := r.IntN(len(open))
			h.chats = append(h.chats, chatDelete(open[i], next()))
			msgs = slices.DeleteFunc(msgs, func(m live) bool { return m.chat == open[i] })
			open = slices.Delete(open, i, i+1)
		case p < 55 || len(msgs) == 0: // post
			chat := open[r.IntN(len(open))]
			m := live{fmt.Sprintf("%s-m%d", prefix, n), chat, next()}
			h.msgs = append(h.msgs, msg(m.id, m.chat, m.created, m.created, fmt.Sprintf("posted %d", n), false))
			msgs = append(msgs, m)
		case p < 90: // edit
			m := msgs[r.IntN(len(msgs))]
			h.msgs = append(h.msgs, msg(m.id, m.chat, m.created, next(), fmt.Sprintf("edit %d ✓", n), false))
		default: // delete
			i := r.IntN(len(msgs))
			m := msgs[i]
			h.msgs = append(h.msgs, msg(m.id, m.chat, m.created, next(), "", true))
			msgs = slices.Delete(msgs, i, i+1)
		}
	}
	return h
}

// arrivals returns the history's records as Kafka may deliver them: shuffled
// (across and within the two topics), about dupPercent of them twice.
func (h history) arrivals(r *rand.Rand, dupPercent int) (msgs []change.Message, chats []change.Chat) {
	for _, m := range h.msgs {
		msgs = append(msgs, m)
		if r.IntN(100) < dupPercent {
			msgs = append(msgs, m)
		}
	}
	for _, c := range h.chats {
		chats = append(chats, c)
		if r.IntN(100) < dupPercent {
			chats = append(chats, c)
		}
	}
	r.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	r.Shuffle(len(chats), func(i, j int) { chats[i], chats[j] = chats[j], chats[i] })
	return msgs, chats
}

// model is what the database must hold after some records were applied, in
// whatever order: per ID the record with the highest version; a message
// deleted if its latest version is, or if its chat's latest event is a
// delete.
type model struct {
	msgs  map[string]change.Message
	chats map[string]change.Chat
}

func newModel() *model {
	return &model{msgs: map[string]change.Message{}, chats: map[string]change.Chat{}}
}

// apply records b and returns what Apply must report for it.
func (m *model) apply(b chatdb.Batch) chatdb.Applied {
	var a chatdb.Applied
	written := map[string]bool{}
	for _, r := range b.Messages {
		if old, ok := m.msgs[r.ID]; ok && old.Version >= r.Version {
			continue
		}
		m.msgs[r.ID] = r
		written[r.ID] = true
	}
	a.MessagesWritten = len(written)
	a.MessagesStale = len(b.Messages) - a.MessagesWritten
	clear(written)
	for _, r := range b.Chats {
		if old, ok := m.chats[r.ID]; ok && old.Version >= r.Version {
			continue
		}
		m.chats[r.ID] = r
		written[r.ID] = true
	}
	a.ChatsWritten = len(written)
	a.ChatsStale = len(b.Chats) - a.ChatsWritten
	return a
}

// check fails the test unless db's reads return the model's state. Chats
// are compared among those whose IDs start with prefix, the history's.
func (m *model) check(t *testing.T, db *chatdb.DB, prefix string) {
	t.Helper()
	var wantChats []string
	byChat := map[string][]change.Message{}
	for id, c := range m.chats {
		if c.Type == change.ChatNew {
			wantChats = append(wantChats, id)
		}
		byChat[id] = []change.Message{}
	}
	slices.Sort(wantChats)
	got := slices.DeleteFunc(chatIDs(t, db), func(id string) bool { return !strings.HasPrefix(id, prefix) })
	if !slices.Equal(got, wantChats) {
		t.Errorf("Chats = %v,\nwant %v", got, wantChats)
	}
	for _, msg := range m.msgs {
		msg.IsDeleted = msg.IsDeleted || m.chats[msg.ChatID].Type == change.ChatDelete
		byChat[msg.ChatID] = append(byChat[msg.ChatID], msg)
	}
	for _, chat := range slices.Sorted(maps.Keys(byChat)) {
		want := byChat[chat]
		slices.SortFunc(want, func(a, b change.Message) int {
			return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
		})
		got, deleted := messagesOf(t, db, chat)
		if wantDeleted := m.chats[chat].Type == change.ChatDelete; deleted != wantDeleted {
			t.Errorf("chat %s deleted = %v, want %v", chat, deleted, wantDeleted)
		}
		if !slices.Equal(got, want) {
			t.Errorf("Messages(%s):\n got %+v\nwant %+v", chat, got, want)
		}
	}
}
