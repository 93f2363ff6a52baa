// Package chatdbtest is test support for code that writes the internal
// database: made-up histories of the external service, their change records
// in any arrival order, and a model of what the database must hold after
// them, compared with what it holds.
package chatdbtest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
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

// NewDB creates a fresh database on the shared test stack, migrates it, and
// returns its DSN, a DB on it and its pool (closed when the test ends).
func NewDB(t testing.TB) (string, *chatdb.DB, *pgxpool.Pool) {
	t.Helper()
	dsn := stacktest.FreshDatabase(t, stacktest.Connect(t))
	pool := stacktest.Pool(t, dsn, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := chatdb.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return dsn, chatdb.New(pool), pool
}

// T0 is when the tests' messages were created, to the microsecond as
// Postgres stores it.
var T0 = time.Date(2025, 3, 4, 5, 6, 7, 891011000, time.UTC)

// Msg is version v of message id of chat chatID: created at T0 plus the
// milliseconds of its creating version, updated at T0 plus v milliseconds.
func Msg(id, chatID string, created, v int64, content string, deleted bool) change.Message {
	return change.Message{
		ID: id, ChatID: chatID, Content: content,
		CreatedAt: T0.Add(time.Duration(created) * time.Millisecond),
		UpdatedAt: T0.Add(time.Duration(v) * time.Millisecond),
		IsDeleted: deleted, Version: v,
	}
}

// ChatNew is chat id's creation, version v.
func ChatNew(id string, v int64) change.Chat {
	return change.Chat{Type: change.ChatNew, ID: id, Version: v}
}

// ChatDelete is chat id's deletion, version v.
func ChatDelete(id string, v int64) change.Chat {
	return change.Chat{Type: change.ChatDelete, ID: id, Version: v}
}

// Dump returns every row of every table, replication times included, so
// that a test can tell whether anything at all was written.
func Dump(t testing.TB, pool *pgxpool.Pool) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT format('chat %s %s %s %s', id, is_deleted, version, replicated_at) FROM chats ORDER BY id`,
		`SELECT format('message %s %s %L %s %s %s %s %s', id, chat_id, content, created_at, updated_at, is_deleted, version, replicated_at)
         FROM messages ORDER BY id`,
		`SELECT format('offset %s %s %s %s', group_id, topic, partition, next_offset) FROM consumer_offsets
         ORDER BY group_id, topic, partition`,
	} {
		rows, err := pool.Query(context.Background(), q)
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

// History is a made-up history of external: chats created, messages posted,
// edited and deleted in them, some chats deleted, every change with the next
// version, its change records in the order they happened.
type History struct {
	Messages []change.Message
	Chats    []change.Chat
}

// NewHistory makes a random history of about records changes in chats chats
// named prefix-cN.
func NewHistory(r *rand.Rand, prefix string, chats, records int) History {
	var h History
	var v int64
	next := func() int64 { v++; return v }
	type live struct {
		id, chat string
		created  int64
	}
	var open []string
	var msgs []live
	for n := 0; len(h.Messages)+len(h.Chats) < records; n++ {
		switch p := r.IntN(100); {
		case len(open) < chats && (len(open) == 0 || p < 5):
			id := fmt.Sprintf("%s-c%d", prefix, len(h.Chats))
			h.Chats = append(h.Chats, ChatNew(id, next()))
			open = append(open, id)
		case p < 7 && len(open) > 1: // delete a chat; its messages go with it
			i := r.IntN(len(open))
			h.Chats = append(h.Chats, ChatDelete(open[i], next()))
			msgs = slices.DeleteFunc(msgs, func(m live) bool { return m.chat == open[i] })
			open = slices.Delete(open, i, i+1)
		case p < 55 || len(msgs) == 0: // post
			chat := open[r.IntN(len(open))]
			m := live{fmt.Sprintf("%s-m%d", prefix, n), chat, next()}
			h.Messages = append(h.Messages, Msg(m.id, m.chat, m.created, m.created, fmt.Sprintf("posted %d", n), false))
			msgs = append(msgs, m)
		case p < 90: // edit
			m := msgs[r.IntN(len(msgs))]
			h.Messages = append(h.Messages, Msg(m.id, m.chat, m.created, next(), fmt.Sprintf("edit %d ✓", n), false))
		default: // delete
			i := r.IntN(len(msgs))
			m := msgs[i]
			h.Messages = append(h.Messages, Msg(m.id, m.chat, m.created, next(), "", true))
			msgs = slices.Delete(msgs, i, i+1)
		}
	}
	return h
}

// Arrivals returns the history's records as Kafka may deliver them: shuffled
// (across and within the two topics), about dupPercent of them twice.
func (h History) Arrivals(r *rand.Rand, dupPercent int) (msgs []change.Message, chats []change.Chat) {
	for _, m := range h.Messages {
		msgs = append(msgs, m)
		if r.IntN(100) < dupPercent {
			msgs = append(msgs, m)
		}
	}
	for _, c := range h.Chats {
		chats = append(chats, c)
		if r.IntN(100) < dupPercent {
			chats = append(chats, c)
		}
	}
	r.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	r.Shuffle(len(chats), func(i, j int) { chats[i], chats[j] = chats[j], chats[i] })
	return msgs, chats
}

// Records returns msgs as records of topic msgTopic and chats as records
// of chatTopic, keyed by chat ID and encoded as the sync encodes them, in a
// random interleaving that keeps each topic's order.
func Records(r *rand.Rand, msgTopic, chatTopic string, msgs []change.Message, chats []change.Chat) []stacktest.Record {
	out := make([]stacktest.Record, 0, len(msgs)+len(chats))
	for len(msgs)+len(chats) > 0 {
		var rec stacktest.Record
		var v any
		if len(chats) > 0 && (len(msgs) == 0 || r.IntN(len(msgs)+len(chats)) < len(chats)) {
			rec, v, chats = stacktest.Record{Topic: chatTopic, Key: chats[0].ID}, chats[0], chats[1:]
		} else {
			rec, v, msgs = stacktest.Record{Topic: msgTopic, Key: msgs[0].ChatID}, msgs[0], msgs[1:]
		}
		b, err := json.Marshal(v)
		if err != nil {
			panic(err) // a change record always encodes
		}
		rec.Value = b
		out = append(out, rec)
	}
	return out
}

// Model is what the database must hold after some records were applied, in
// whatever order: per ID the record with the highest version; a message
// deleted if its latest version is, or if its chat's latest event is a
// delete.
type Model struct {
	msgs  map[string]change.Message
	chats map[string]change.Chat
}

// NewModel returns the model of an empty database.
func NewModel() *Model {
	return &Model{msgs: map[string]change.Message{}, chats: map[string]change.Chat{}}
}

// Apply records b and returns what Apply must report for it.
func (m *Model) Apply(b chatdb.Batch) chatdb.Applied {
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

// Rows returns how many rows the model's state has: messages and chats.
func (m *Model) Rows() int { return len(m.msgs) + len(m.chats) }

// Check fails the test unless db holds the model's state (see Diff).
func (m *Model) Check(t testing.TB, db *chatdb.DB, prefix string) {
	t.Helper()
	if err := m.Diff(context.Background(), db, prefix); err != nil {
		t.Error(err)
	}
}

// Diff returns an error describing every difference between the model's
// state and what db's reads return: the chats that are not deleted, among
// those whose IDs start with prefix (the history's), and each chat's
// messages and deleted flag.
func (m *Model) Diff(ctx context.Context, db *chatdb.DB, prefix string) error {
	var wantChats []string
	byChat := map[string][]change.Message{}
	for id, c := range m.chats {
		if c.Type == change.ChatNew {
			wantChats = append(wantChats, id)
		}
		byChat[id] = []change.Message{}
	}
	slices.Sort(wantChats)
	stored, err := db.Chats(ctx)
	if err != nil {
		return err
	}
	var got []string
	for _, c := range stored {
		if strings.HasPrefix(c.ID, prefix) {
			got = append(got, c.ID)
		}
	}
	var errs []error
	if !slices.Equal(got, wantChats) {
		errs = append(errs, fmt.Errorf("Chats = %v,\nwant %v", got, wantChats))
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
		got, deleted, err := db.Messages(ctx, chat)
		if err != nil {
			errs = append(errs, fmt.Errorf("Messages(%s): %w", chat, err))
			continue
		}
		if wantDeleted := m.chats[chat].Type == change.ChatDelete; deleted != wantDeleted {
			errs = append(errs, fmt.Errorf("chat %s deleted = %v, want %v", chat, deleted, wantDeleted))
		}
		if !slices.Equal(got, want) {
			errs = append(errs, fmt.Errorf("Messages(%s):\n got %+v\nwant %+v", chat, got, want))
		}
	}
	if len(errs) > maxDiffs {
		errs = append(errs[:maxDiffs], fmt.Errorf("and %d more differences", len(errs)-maxDiffs))
	}
	return errors.Join(errs...)
}

// maxDiffs is the most differences Diff describes.
const maxDiffs = 10
