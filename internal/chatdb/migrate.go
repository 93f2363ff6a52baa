package chatdb

import (
	"context"
	"embed"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/internal/pgmigrate"
)

// migrationFS holds the schema migrations: migrations/NNNN_name.sql, applied
// in the order of NNNN, each in its own transaction.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

// migrateLockClass is the first key of the two-key advisory lock that
// serializes migrations across processes.
const migrateLockClass = 0x1c47 // "i"nternal "c"hat; the one-key space belongs to the chat locks of Apply (chatLockKey)

// Migrate brings the database of pool to the newest schema (see
// pgmigrate.Apply); any number of writers may run it at once.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgmigrate.Apply(ctx, pool, migrationFS, migrateLockClass)
}
