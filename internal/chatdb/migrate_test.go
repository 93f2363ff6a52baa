package chatdb_test

import (
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// TestMigrateConcurrentlyAndAgain runs Migrate from several pools at once, as
// several writers starting together would, and then again: each migration
// is applied once, and the schema works.
func TestMigrateConcurrentlyAndAgain(t *testing.T) {
	t.Parallel()
	const writers = 5
	dsn := stacktest.FreshDatabase(t, stacktest.Connect(t))
	ctx := t.Context()

	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		pool := openPool(t, dsn, 2)
		wg.Go(func() { errs[i] = chatdb.Migrate(ctx, pool) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate %d: %v", i, err)
		}
	}
	pool := openPool(t, dsn, 2)
	if err := chatdb.Migrate(ctx, pool); err != nil {
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
	if want := []applied{{1, "0001_init"}, {3, "0003_messages_page"}}; !slices.Equal(got, want) {
		t.Fatalf("schema_migrations = %+v, want %+v, each once", got, want)
	}

	// A message must be storable before its chat: no foreign keys.
	var fks int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_constraint WHERE contype = 'f'`).Scan(&fks); err != nil {
		t.Fatal(err)
	}
	if fks != 0 {
		t.Errorf("the schema has %d foreign keys, want none", fks)
	}
	db := chatdb.New(pool)
	if _, err := db.Apply(ctx, group, chatdb.Batch{
		Messages: []change.Message{msg("m", "chat", 1, 1, "hi", false)},
		Chats:    []change.Chat{chatNew("chat", 1)},
		Offsets:  []chatdb.Advance{first("chats", 0, 1)},
	}); err != nil {
		t.Fatalf("the migrated schema does not work: %v", err)
	}
}
