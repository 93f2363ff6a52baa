package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chatpoc/chat-poc/apps/external/store"
)

// TestMigrateConcurrentlyAndAgain runs Migrate from several pools at once, as
// several processes starting together would, and then again: each migration
// is applied once, and the schema works.
func TestMigrateConcurrentlyAndAgain(t *testing.T) {
	t.Parallel()
	const processes = 4
	dsn := freshDSN(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	var wg sync.WaitGroup
	errs := make([]error, processes)
	for i := range processes {
		pool := openPool(t, dsn, 2)
		wg.Go(func() { errs[i] = store.Migrate(ctx, pool) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate %d: %v", i, err)
		}
	}
	pool := openPool(t, dsn, 2)
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatalf("Migrate of a migrated database: %v", err)
	}

	rows, err := pool.Query(ctx, `SELECT version, name FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	type applied struct {
		Version int
		Name    string
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[applied])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != (applied{1, "0001_init"}) {
		t.Fatalf("schema_migrations = %+v, want 0001_init once", got)
	}

	s := store.New(pool, store.Options{})
	defer s.Close()
	if _, err := s.CreateChat(ctx); err != nil {
		t.Fatalf("the migrated schema does not work: %v", err)
	}
}
