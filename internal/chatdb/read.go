package chatdb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chatpoc/chat-poc/internal/change"
)

// Chat is a stored chat that is not deleted.
type Chat struct {
	ID string
	// Version is the version of the last chat event applied.
	Version int64
	// ReplicatedAt is when the writer last changed the row.
	ReplicatedAt time.Time
}

// Offsets returns the stored offsets of consumer group group, by topic and
// partition: where its consumers resume reading.
func (db *DB) Offsets(ctx context.Context, group string) ([]Offset, error) {
	rows, err := db.pool.Query(ctx, `
SELECT topic, partition, next_offset, COALESCE(topic_id, '') FROM consumer_offsets
WHERE group_id = $1 ORDER BY topic, partition`, group)
	if err != nil {
		return nil, fmt.Errorf("read offsets of group %s: %w", group, err)
	}
	offsets, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Offset])
	if err != nil {
		return nil, fmt.Errorf("read offsets of group %s: %w", group, err)
	}
	return offsets, nil
}

// Chats returns the chats that are not deleted, by ID. A chat of which only
// messages have arrived yet is not among them.
func (db *DB) Chats(ctx context.Context) ([]Chat, error) {
	rows, err := db.pool.Query(ctx, `
SELECT id, version, replicated_at FROM chats WHERE NOT is_deleted ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read chats: %w", err)
	}
	chats, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Chat, error) {
		var c Chat
		err := row.Scan(&c.ID, &c.Version, &c.ReplicatedAt)
		c.ReplicatedAt = c.ReplicatedAt.UTC()
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read chats: %w", err)
	}
	return chats, nil
}

// Messages returns every stored message of chat chatID, deleted ones
// included, in display order (see Compare), and whether the chat's row says
// it is deleted (false while only its messages have arrived). Times are in
// UTC, to the microsecond. It returns ErrNotFound if neither the chat nor
// any message of it is stored. It reads the whole chat: the app reads pages
// (MessagesPage); this is for tests and tools.
func (db *DB) Messages(ctx context.Context, chatID string) ([]change.Message, bool, error) {
	return db.MessagesPage(ctx, chatID, Cursor{}, math.MaxInt64)
}

// MessageVersion returns the stored version of message id, and false if no
// row of it is stored.
func (db *DB) MessageVersion(ctx context.Context, id string) (int64, bool, error) {
	var v int64
	err := db.pool.QueryRow(ctx, `SELECT version FROM messages WHERE id = $1`, id).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read the version of message %s: %w", id, err)
	}
	return v, true, nil
}
