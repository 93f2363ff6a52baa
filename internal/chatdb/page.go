package chatdb

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chatpoc/chat-poc/internal/change"
)

// Cursor is a position in a chat's display order — a message's creation
// time and ID, IDs compared byte by byte — before which the next older page
// starts. The zero Cursor is after every message.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// CursorOf returns the position of message m.
func CursorOf(m change.Message) Cursor { return Cursor{CreatedAt: m.CreatedAt, ID: m.ID} }

// IsZero reports whether c is the zero Cursor (after every message).
func (c Cursor) IsZero() bool { return c.CreatedAt.IsZero() && c.ID == "" }

// Before reports whether message m comes before c in display order (c
// zero: every message does).
func (c Cursor) Before(m change.Message) bool {
	return c.IsZero() || Compare(m, change.Message{CreatedAt: c.CreatedAt, ID: c.ID}) < 0
}

// Compare orders messages for display: by creation time, then by ID in byte
// order (as the messages_chat_page index orders them).
func Compare(a, b change.Message) int {
	return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
}

// pageSQL reads a page of chat $1: at most $4 messages before ($2, $3),
// newest first, each row with whether the chat is known and deleted. One
// statement, so the flags and the page come from one snapshot; the EXISTS
// tells a chat known only by messages after the cursor (an empty older
// page) from one nothing is known of.
const pageSQL = `
SELECT c.id IS NOT NULL OR EXISTS (SELECT FROM messages WHERE chat_id = k.id),
       coalesce(c.is_deleted, false),
       m.id, m.content, m.created_at, m.updated_at, m.is_deleted, m.version
FROM (VALUES ($1::text)) AS k (id)
LEFT JOIN chats AS c ON c.id = k.id
LEFT JOIN LATERAL (
    SELECT id, content, created_at, updated_at, is_deleted, version FROM messages
    WHERE chat_id = k.id AND (created_at, id COLLATE "C") < ($2::timestamptz, $3::text COLLATE "C")
    ORDER BY created_at DESC, id COLLATE "C" DESC
    LIMIT $4
) AS m ON true`

// MessagesPage returns at most limit stored messages of chat chatID that
// come before before in display order (before zero: the newest ones),
// deleted ones included, oldest first; and whether the chat's row says it is
// deleted. It reads one range of the messages_chat_page index backwards,
// never the whole chat. Times are in UTC, to the microsecond. It returns
// ErrNotFound if neither the chat nor any message of it is stored.
func (db *DB) MessagesPage(ctx context.Context, chatID string, before Cursor, limit int) ([]change.Message, bool, error) {
	// The zero cursor as a bound every stored time is below.
	at := pgtype.Timestamptz{Time: before.CreatedAt, Valid: true}
	if before.IsZero() {
		at.InfinityModifier = pgtype.Infinity
	}
	rows, err := db.pool.Query(ctx, pageSQL, chatID, at, before.ID, limit)
	if err != nil {
		return nil, false, fmt.Errorf("read a page of chat %s: %w", chatID, err)
	}
	defer rows.Close()
	var (
		msgs                   = []change.Message{}
		chatKnown, chatDeleted bool
	)
	for rows.Next() {
		var (
			id, content      *string
			created, updated *time.Time
			deleted          *bool
			version          *int64
		)
		if err := rows.Scan(&chatKnown, &chatDeleted, &id, &content, &created, &updated, &deleted, &version); err != nil {
			return nil, false, fmt.Errorf("read a page of chat %s: %w", chatID, err)
		}
		if id == nil {
			continue // no message before the cursor
		}
		msgs = append(msgs, change.Message{
			ID: *id, ChatID: chatID, Content: *content,
			CreatedAt: created.UTC(), UpdatedAt: updated.UTC(),
			IsDeleted: *deleted, Version: *version,
		})
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read a page of chat %s: %w", chatID, err)
	}
	if !chatKnown {
		return nil, false, fmt.Errorf("chat %s: %w", chatID, ErrNotFound)
	}
	slices.Reverse(msgs)
	return msgs, chatDeleted, nil
}
