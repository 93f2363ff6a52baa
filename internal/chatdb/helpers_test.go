package chatdb_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

// group is the consumer group the tests store offsets for.
const group = "chat-writer"

// The history, records and model of chatdbtest, by their short names here.
var (
	t0         = chatdbtest.T0
	msg        = chatdbtest.Msg
	chatNew    = chatdbtest.ChatNew
	chatDelete = chatdbtest.ChatDelete
	newHistory = chatdbtest.NewHistory
	newModel   = chatdbtest.NewModel
	dump       = chatdbtest.Dump
)

// openPool opens a pool on dsn, closed when the test ends.
func openPool(t *testing.T, dsn string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	return stacktest.Pool(t, dsn, maxConns)
}

// newDB returns a DB on a fresh, migrated database of the shared stack, with
// its pool.
func newDB(t *testing.T) (*chatdb.DB, *pgxpool.Pool) {
	t.Helper()
	_, db, pool := chatdbtest.NewDB(t)
	return db, pool
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

func off(topic string, partition int32, next int64) chatdb.Offset {
	return chatdb.Offset{Topic: topic, Partition: partition, Next: next}
}

// adv advances partition topic[partition] from offset from to offset to.
func adv(topic string, partition int32, from, to int64) chatdb.Advance {
	return chatdb.Advance{Topic: topic, Partition: partition, From: from, To: to}
}

// offWithID is o with topic ID id.
func offWithID(o chatdb.Offset, id string) chatdb.Offset {
	o.TopicID = id
	return o
}

// advWithID is a with topic ID id.
func advWithID(a chatdb.Advance, id string) chatdb.Advance {
	a.TopicID = id
	return a
}

// first stores partition topic[partition]'s first offset, next.
func first(topic string, partition int32, next int64) chatdb.Advance {
	return adv(topic, partition, chatdb.NoOffset, next)
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
