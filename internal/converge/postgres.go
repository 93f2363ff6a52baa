package converge

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
)

// The reads of LoadDB: every row, or those of the chats in $1 when it is
// not NULL. They read the tables of internal/chatdb's migrations.
const (
	chatRowsSQL = `
SELECT id, is_deleted, version, replicated_at FROM chats
WHERE $1::text[] IS NULL OR id = ANY($1)`
	messageRowsSQL = `
SELECT id, chat_id, content, created_at, updated_at, is_deleted, version, replicated_at FROM messages
WHERE $1::text[] IS NULL OR chat_id = ANY($1)`
)

// LoadDB reads the rows of the internal database of pool, from one
// snapshot: those of the chats chatIDs, or every row if chatIDs is nil.
// Times are in UTC.
func LoadDB(ctx context.Context, pool *pgxpool.Pool, chatIDs []string) (DBState, error) {
	var db DBState
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err := pgx.BeginTxFunc(ctx, pool, opts, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, chatRowsSQL, chatIDs)
		if err != nil {
			return fmt.Errorf("read chats: %w", err)
		}
		db.Chats, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (ChatRow, error) {
			var c ChatRow
			err := row.Scan(&c.ID, &c.IsDeleted, &c.Version, &c.ReplicatedAt)
			c.ReplicatedAt = c.ReplicatedAt.UTC()
			return c, err
		})
		if err != nil {
			return fmt.Errorf("read chats: %w", err)
		}
		rows, err = tx.Query(ctx, messageRowsSQL, chatIDs)
		if err != nil {
			return fmt.Errorf("read messages: %w", err)
		}
		db.Messages, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (MessageRow, error) {
			var m MessageRow
			err := row.Scan(&m.ID, &m.ChatID, &m.Content, &m.CreatedAt, &m.UpdatedAt, &m.IsDeleted, &m.Version, &m.ReplicatedAt)
			m.CreatedAt, m.UpdatedAt, m.ReplicatedAt = m.CreatedAt.UTC(), m.UpdatedAt.UTC(), m.ReplicatedAt.UTC()
			return m, err
		})
		if err != nil {
			return fmt.Errorf("read messages: %w", err)
		}
		return nil
	})
	if err != nil {
		return DBState{}, fmt.Errorf("load the internal database: %w", err)
	}
	return db, nil
}

// ChatIDs returns the IDs of the chats the log names, for LoadDB.
func ChatIDs(acked []loadgen.Record) []string {
	seen := map[string]bool{}
	ids := []string{}
	for _, r := range acked {
		if r.ChatID != "" && !seen[r.ChatID] {
			seen[r.ChatID] = true
			ids = append(ids, r.ChatID)
		}
	}
	return ids
}
