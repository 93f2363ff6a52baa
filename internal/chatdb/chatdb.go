// Package chatdb is the internal system's Postgres layer: the chats and
// messages synced from the external service, and the Kafka offsets of the
// writer that keeps them. The writer applies batches of change records with
// Apply; the internal app reads with Chats and MessagesPage.
//
// Every row keeps the version of the last change applied to it and Apply
// writes a change only if its version is newer (last writer wins), so Kafka's
// at-least-once delivery — duplicates, replays, mirrored copies, any arrival
// order — has exactly-once effect. A chat's delete soft-deletes its messages,
// including ones that arrive after it.
package chatdb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/internal/change"
)

// ErrNotFound is returned by Messages for a chat of which neither the chat
// nor any message is stored.
var ErrNotFound = errors.New("not found")

// Offset is a Kafka partition's position: Next is the offset of the next
// record to read, one past the last record a batch covers.
type Offset struct {
	Topic     string
	Partition int32
	Next      int64
	// TopicID is the Kafka ID of the topic Next was read from ("" if it was
	// stored without one): a topic created again under its name has another.
	TopicID string
}

// NoOffset is Advance.From for a partition of which no offset is stored yet.
const NoOffset int64 = -1

// ErrOffsetMoved is returned by Apply, which then writes nothing, when a
// partition's stored offset is not where the batch's Advance says it starts:
// another consumer stored records of that partition since (a rebalance), or
// a Postgres failover lost the last commits, offsets with them. Either way
// the consumer's position is not the stored one; it must seek to the stored
// offsets (Offsets) and read again from there.
var ErrOffsetMoved = errors.New("stored offset moved")

// Advance moves a partition's stored offset from From, where the consumer
// believes it is (NoOffset: none stored), to To, one past the last record
// of the batch from that partition.
type Advance struct {
	Topic     string
	Partition int32
	From, To  int64
	// TopicID is the Kafka ID of the topic the records were read from, kept
	// with the offset ("": keep the stored one).
	TopicID string
}

// Batch is what one Apply writes in one transaction: change records in any
// order, duplicates allowed, and the advances of the partitions they came
// from.
type Batch struct {
	Messages []change.Message
	Chats    []change.Chat
	Offsets  []Advance
}

// Applied counts what an Apply did with a batch's records. Every record is
// either written or stale: a stale one's version was not newer than the
// stored row's, or than another record's of the same ID in the batch.
type Applied struct {
	MessagesWritten int
	MessagesStale   int
	ChatsWritten    int
	ChatsStale      int
	// MessagesDeletedWithChat counts stored messages that a chat delete of
	// the batch soft-deleted. Messages the batch itself writes for a deleted
	// chat are stored deleted and counted as written, not here.
	MessagesDeletedWithChat int
}

// DB reads and writes the internal database.
type DB struct {
	pool *pgxpool.Pool
}

// New returns a DB on pool, whose database Migrate has brought up to date.
func New(pool *pgxpool.Pool) *DB {
	return &DB{pool: pool}
}

// The statements of Apply. Each takes its rows as parallel arrays and unnests
// them, so a batch of any size is one statement per table.
const (
	// lockChatsSQL takes a transaction-level advisory lock per chat of the
	// batch (keys sorted, so two batches cannot deadlock). It serializes the
	// transactions that touch one chat: without it, a message inserted
	// concurrently with its chat's delete could miss both the delete's
	// UPDATE (not committed yet) and the deleted chat row (not committed
	// yet), and stay visible forever.
	lockChatsSQL = `SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k`

	upsertChatsSQL = `
INSERT INTO chats AS c (id, is_deleted, version)
SELECT * FROM unnest($1::text[], $2::boolean[], $3::bigint[])
ON CONFLICT (id) DO UPDATE
    SET is_deleted = EXCLUDED.is_deleted, version = EXCLUDED.version, replicated_at = now()
    WHERE c.version < EXCLUDED.version`

	// deleteChatsMessagesSQL soft-deletes the stored messages of the given
	// chats whose rows now say deleted. The version of a message stays: it
	// is external's version of the message, which the chat delete did not
	// change; newer versions of it are stored deleted by upsertMessagesSQL.
	deleteChatsMessagesSQL = `
UPDATE messages AS m SET is_deleted = true, replicated_at = now()
FROM chats AS c
WHERE c.id = ANY($1::text[]) AND c.is_deleted AND m.chat_id = c.id AND NOT m.is_deleted`

	// upsertMessagesSQL stores a message deleted if its chat's row says
	// deleted (read after this transaction's chat writes, and under the chat
	// lock, so also after every other transaction's).
	upsertMessagesSQL = `
INSERT INTO messages AS m (id, chat_id, content, created_at, updated_at, is_deleted, version)
SELECT i.id, i.chat_id, i.content, i.created_at, i.updated_at,
       i.is_deleted OR EXISTS (SELECT 1 FROM chats AS c WHERE c.id = i.chat_id AND c.is_deleted),
       i.version
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::boolean[], $7::bigint[])
    AS i (id, chat_id, content, created_at, updated_at, is_deleted, version)
ON CONFLICT (id) DO UPDATE
    SET chat_id = EXCLUDED.chat_id, content = EXCLUDED.content,
        created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
        is_deleted = EXCLUDED.is_deleted, version = EXCLUDED.version, replicated_at = now()
    WHERE m.version < EXCLUDED.version`

	// advanceOffsetsSQL moves each stored offset that is at the batch's From
	// to its To, and returns the partitions it moved; insertOffsetsSQL stores
	// the first offset of partitions that have none. Both run first in the
	// transaction: the offset rows they lock serialize two consumers that
	// both think they own a partition (a rebalance in flight), and the
	// second one finds the offset moved.
	advanceOffsetsSQL = `
UPDATE consumer_offsets AS o
SET next_offset = i.to_offset, topic_id = COALESCE(NULLIF(i.topic_id, ''), o.topic_id)
FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::text[])
    AS i (topic, partition, from_offset, to_offset, topic_id)
WHERE o.group_id = $1 AND o.topic = i.topic AND o.partition = i.partition AND o.next_offset = i.from_offset
RETURNING o.topic, o.partition`
	insertOffsetsSQL = `
INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, topic_id)
SELECT $1, t, p, n, NULLIF(id, '') FROM unnest($2::text[], $3::int[], $4::bigint[], $5::text[]) AS i (t, p, n, id)
ON CONFLICT (group_id, topic, partition) DO NOTHING
RETURNING topic, partition`
)

// Apply writes batch b and the offsets of consumer group group in one
// transaction: the chats and messages whose versions are newer than the
// stored ones (last writer wins), the soft deletes of deleted chats'
// messages, and the partitions' advances. Either all of it is committed or
// nothing is.
//
// An advance is a compare-and-set: if a partition's stored offset is not at
// its From, Apply writes nothing and returns an error wrapping
// ErrOffsetMoved that names the partitions. Apply first checks every record
// (see CheckMessage, CheckChat) and every advance; if one is malformed it
// writes nothing and returns an error, which wraps change.ErrInvalid for a
// record. A batch costs the same few round trips whatever its size.
func (db *DB) Apply(ctx context.Context, group string, b Batch) (Applied, error) {
	if err := checkBatch(group, b); err != nil {
		return Applied{}, fmt.Errorf("apply batch: %w", err)
	}
	recs := newRecords(b.Messages, b.Chats)
	if recs.empty() && len(b.Offsets) == 0 {
		return Applied{}, nil
	}

	q := &pgx.Batch{}
	moves, inserts := splitAdvances(b.Offsets)
	if len(moves) > 0 {
		topics, partitions, froms, tos, ids := advanceColumns(moves)
		q.Queue(advanceOffsetsSQL, group, topics, partitions, froms, tos, ids)
	}
	if len(inserts) > 0 {
		topics, partitions, _, tos, ids := advanceColumns(inserts)
		q.Queue(insertOffsetsSQL, group, topics, partitions, tos, ids)
	}
	recs.queue(q)

	var a Applied
	// READ COMMITTED whatever the server's default: each statement must see
	// what the transactions that held the chat locks before us committed.
	err := pgx.BeginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		res := tx.SendBatch(ctx, q)
		defer res.Close()
		advanced := make(map[partitionKey]bool, len(b.Offsets))
		for _, n := range []int{len(moves), len(inserts)} {
			if n == 0 {
				continue
			}
			if err := collectAdvanced(res, advanced); err != nil {
				return fmt.Errorf("advance %d offsets of group %s: %w", n, group, err)
			}
		}
		if len(advanced) < len(b.Offsets) {
			return offsetMoved(b.Offsets, advanced)
		}
		var err error
		if a, err = recs.exec(res); err != nil {
			return err
		}
		return res.Close()
	})
	if err != nil {
		return Applied{}, fmt.Errorf("apply batch of %d messages, %d chats, %d offsets: %w",
			len(b.Messages), len(b.Chats), len(b.Offsets), rejected(err))
	}
	a.MessagesStale = len(b.Messages) - a.MessagesWritten
	a.ChatsStale = len(b.Chats) - a.ChatsWritten
	return a, nil
}

// records is the part of a batch that writes rows: the latest version of
// each chat and message, the chats it deletes and the chat locks it takes.
// Its statements are queued on a pgx.Batch (queue) and their results read
// back in the same order (exec).
type records struct {
	msgs    []change.Message
	chats   []change.Chat
	deletes []string
	locks   []int64
}

func newRecords(msgs []change.Message, chats []change.Chat) records {
	r := records{msgs: latestMessages(msgs), chats: latestChats(chats)}
	r.locks = chatLockKeys(r.msgs, r.chats)
	for _, c := range r.chats {
		if c.Type == change.ChatDelete {
			r.deletes = append(r.deletes, c.ID)
		}
	}
	return r
}

func (r records) empty() bool { return len(r.msgs)+len(r.chats) == 0 }

// queue queues r's statements on q.
func (r records) queue(q *pgx.Batch) {
	if len(r.locks) > 0 {
		q.Queue(lockChatsSQL, r.locks)
	}
	if len(r.chats) > 0 {
		ids := make([]string, len(r.chats))
		deleted := make([]bool, len(r.chats))
		versions := make([]int64, len(r.chats))
		for i, c := range r.chats {
			ids[i], deleted[i], versions[i] = c.ID, c.Type == change.ChatDelete, c.Version
		}
		q.Queue(upsertChatsSQL, ids, deleted, versions)
	}
	if len(r.deletes) > 0 {
		q.Queue(deleteChatsMessagesSQL, r.deletes)
	}
	if len(r.msgs) > 0 {
		n := len(r.msgs)
		ids, chatIDs, contents := make([]string, n), make([]string, n), make([]string, n)
		created, updated := make([]time.Time, n), make([]time.Time, n)
		deleted, versions := make([]bool, n), make([]int64, n)
		for i, m := range r.msgs {
			ids[i], chatIDs[i], contents[i] = m.ID, m.ChatID, m.Content
			created[i], updated[i] = m.CreatedAt, m.UpdatedAt
			deleted[i], versions[i] = m.IsDeleted, m.Version
		}
		q.Queue(upsertMessagesSQL, ids, chatIDs, contents, created, updated, deleted, versions)
	}
}

// exec reads the results of the statements queue queued, and counts the
// rows they wrote.
func (r records) exec(res pgx.BatchResults) (Applied, error) {
	var a Applied
	if len(r.locks) > 0 {
		if _, err := res.Exec(); err != nil {
			return a, fmt.Errorf("lock %d chats: %w", len(r.locks), err)
		}
	}
	if len(r.chats) > 0 {
		tag, err := res.Exec()
		if err != nil {
			return a, fmt.Errorf("upsert %d chats: %w", len(r.chats), err)
		}
		a.ChatsWritten = int(tag.RowsAffected())
	}
	if len(r.deletes) > 0 {
		tag, err := res.Exec()
		if err != nil {
			return a, fmt.Errorf("soft-delete messages of %d deleted chats: %w", len(r.deletes), err)
		}
		a.MessagesDeletedWithChat = int(tag.RowsAffected())
	}
	if len(r.msgs) > 0 {
		tag, err := res.Exec()
		if err != nil {
			return a, fmt.Errorf("upsert %d messages: %w", len(r.msgs), err)
		}
		a.MessagesWritten = int(tag.RowsAffected())
	}
	return a, nil
}

type partitionKey struct {
	topic     string
	partition int32
}

// splitAdvances returns the advances of partitions with a stored offset and
// those of partitions without, each sorted by topic and partition so that
// two transactions lock offset rows in the same order.
func splitAdvances(advances []Advance) (moves, inserts []Advance) {
	sorted := slices.SortedFunc(slices.Values(advances), func(a, b Advance) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	for _, a := range sorted {
		if a.From == NoOffset {
			inserts = append(inserts, a)
		} else {
			moves = append(moves, a)
		}
	}
	return moves, inserts
}

func advanceColumns(advances []Advance) (topics []string, partitions []int32, froms, tos []int64, topicIDs []string) {
	for _, a := range advances {
		topics, partitions = append(topics, a.Topic), append(partitions, a.Partition)
		froms, tos = append(froms, a.From), append(tos, a.To)
		topicIDs = append(topicIDs, a.TopicID)
	}
	return topics, partitions, froms, tos, topicIDs
}

// collectAdvanced reads the partitions one offset statement moved.
func collectAdvanced(res pgx.BatchResults, into map[partitionKey]bool) error {
	rows, err := res.Query()
	if err != nil {
		return err
	}
	var k partitionKey
	_, err = pgx.ForEachRow(rows, []any{&k.topic, &k.partition}, func() error {
		into[k] = true
		return nil
	})
	return err
}

// offsetMoved names the advances that found their partition's offset moved.
func offsetMoved(advances []Advance, advanced map[partitionKey]bool) error {
	var moved []string
	for _, a := range advances {
		if !advanced[partitionKey{a.Topic, a.Partition}] {
			moved = append(moved, fmt.Sprintf("%s[%d] (expected at %d)", a.Topic, a.Partition, a.From))
		}
	}
	return fmt.Errorf("%w: %s", ErrOffsetMoved, strings.Join(moved, ", "))
}

// CheckMessage reports whether Apply accepts m: m.Validate, which admits
// only IDs and content Postgres can store. The writer can use it to
// dead-letter a record before batching it. Its errors wrap
// change.ErrInvalid.
func CheckMessage(m change.Message) error { return m.Validate() }

// CheckChat reports whether Apply accepts c: c.Validate (which admits only
// IDs Postgres can store). Its errors wrap change.ErrInvalid.
func CheckChat(c change.Chat) error { return c.Validate() }

// checkBatch checks everything Apply would write before it starts writing.
func checkBatch(group string, b Batch) error {
	for i, m := range b.Messages {
		if err := CheckMessage(m); err != nil {
			return fmt.Errorf("message %d of %d: %w", i+1, len(b.Messages), err)
		}
	}
	for i, c := range b.Chats {
		if err := CheckChat(c); err != nil {
			return fmt.Errorf("chat event %d of %d: %w", i+1, len(b.Chats), err)
		}
	}
	if len(b.Offsets) > 0 {
		if err := change.CheckText(group); group == "" || err != nil {
			return fmt.Errorf("offsets of consumer group %q: bad group name", group)
		}
	}
	seen := make(map[partitionKey]bool, len(b.Offsets))
	for _, a := range b.Offsets {
		k := partitionKey{a.Topic, a.Partition}
		switch err := change.CheckText(a.Topic); {
		case a.Topic == "" || err != nil || a.Partition < 0:
			return fmt.Errorf("bad partition in advance %+v", a)
		case a.From < NoOffset || a.To <= a.From:
			return fmt.Errorf("bad offsets in advance %+v: want NoOffset <= From < To", a)
		case seen[k]:
			return fmt.Errorf("two advances of %s[%d] in one batch", a.Topic, a.Partition)
		}
		seen[k] = true
	}
	return nil
}

// latestMessages returns the highest version of each message in msgs: one
// statement's ON CONFLICT cannot touch a row twice.
func latestMessages(msgs []change.Message) []change.Message {
	return latest(msgs, func(m change.Message) (string, int64) { return m.ID, m.Version })
}

// latestChats returns the highest version of each chat's events in chats.
func latestChats(chats []change.Chat) []change.Chat {
	return latest(chats, func(c change.Chat) (string, int64) { return c.ID, c.Version })
}

// latest keeps, per key, the first of the items with the highest version, in
// the order of their keys' first appearance.
func latest[T any](items []T, keyVersion func(T) (string, int64)) []T {
	type kept struct {
		at      int
		version int64
	}
	seen := make(map[string]kept, len(items))
	out := make([]T, 0, len(items))
	for _, it := range items {
		k, v := keyVersion(it)
		switch old, ok := seen[k]; {
		case !ok:
			seen[k] = kept{len(out), v}
			out = append(out, it)
		case v > old.version:
			seen[k] = kept{old.at, v}
			out[old.at] = it
		}
	}
	return out
}

// chatLockKeys returns the sorted, distinct advisory lock keys of the chats
// that msgs and chats touch. Two chats that share a key only wait for each
// other.
func chatLockKeys(msgs []change.Message, chats []change.Chat) []int64 {
	keys := make([]int64, 0, len(msgs)+len(chats))
	for _, m := range msgs {
		keys = append(keys, chatLockKey(m.ChatID))
	}
	for _, c := range chats {
		keys = append(keys, chatLockKey(c.ID))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func chatLockKey(chatID string) int64 {
	h := fnv.New64a()
	h.Write([]byte(chatID))
	return int64(h.Sum64())
}
