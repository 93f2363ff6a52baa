// Package pgmigrate applies a package's embedded SQL migrations to its
// Postgres database: plain SQL files run in order, each once, recorded in
// schema_migrations, safe when several processes start at once.
package pgmigrate

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads and orders the migrations in fsys.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	files, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var migs []migration
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".sql")
		prefix, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name is not NNNN_name.sql", f)
		}
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", f, err)
		}
		migs = append(migs, migration{version: v, name: name, sql: string(b)})
	}
	slices.SortFunc(migs, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(migs); i++ {
		if migs[i].version == migs[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", migs[i-1].name, migs[i].name, migs[i].version)
		}
	}
	return migs, nil
}

// Apply brings the database of pool to the newest schema: it applies the
// migrations of fsys (migrations/NNNN_name.sql, in the order of NNNN) that
// the schema_migrations table does not list yet, each in its own transaction
// together with its schema_migrations row (so a migration must not use
// statements that cannot run in one, such as CREATE INDEX CONCURRENTLY).
// Each transaction first takes the two-key advisory lock (lockClass, 1) and
// then re-checks whether its migration is applied, so any number of
// processes may migrate one database at once. lockClass must differ from
// the other advisory locks the database's users take.
func Apply(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, lockClass int32) error {
	migs, err := loadMigrations(fsys)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, m := range migs {
		if err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
			return applyMigration(ctx, tx, lockClass, m)
		}); err != nil {
			return fmt.Errorf("migrate: apply %s: %w", m.name, err)
		}
	}
	return nil
}

func applyMigration(ctx context.Context, tx pgx.Tx, lockClass int32, m migration) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, int32(1)); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	// Under the lock, and each statement with a fresh READ COMMITTED snapshot:
	// this sees every migration another process committed while we waited.
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var applied bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, m.version).
		Scan(&applied); err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	if applied {
		return nil
	}
	// No arguments: pgx sends it as a simple query, so a file may hold many
	// statements.
	if _, err := tx.Exec(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
		return fmt.Errorf("record in schema_migrations: %w", err)
	}
	return nil
}
