package pgmigrate_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/pgmigrate"
)

const lockClass = 0x7e57

func pool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	return stacktest.Pool(t, stacktest.FreshDatabase(t, stacktest.Connect(t)), 8)
}

func TestApplyRunsEachMigrationOnceInOrder(t *testing.T) {
	t.Parallel()
	p := pool(t)
	ctx := context.Background()
	fsys := fstest.MapFS{
		// Listed out of order on purpose; 0002 depends on 0001.
		"migrations/0002_more.sql": {Data: []byte(`INSERT INTO t VALUES (2); ALTER TABLE t ADD COLUMN c text;`)},
		"migrations/0001_init.sql": {Data: []byte(`CREATE TABLE t (v int PRIMARY KEY); INSERT INTO t VALUES (1);`)},
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = pgmigrate.Apply(ctx, p, fsys, lockClass) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Apply: %v", err)
		}
	}
	if err := pgmigrate.Apply(ctx, p, fsys, lockClass); err != nil {
		t.Fatalf("Apply again: %v", err)
	}
	var rows, recorded int
	if err := p.QueryRow(ctx, `SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM schema_migrations)`).Scan(&rows, &recorded); err != nil {
		t.Fatal(err)
	}
	if rows != 2 || recorded != 2 {
		t.Errorf("%d rows in t and %d migrations recorded, want 2 and 2 (each migration once)", rows, recorded)
	}
}

func TestApplyRejectsBadSetsAndRollsBackAFailedMigration(t *testing.T) {
	t.Parallel()
	p := pool(t)
	ctx := context.Background()
	for name, fsys := range map[string]fstest.MapFS{
		"no version":     {"migrations/init.sql": {Data: []byte(`SELECT 1`)}},
		"shared version": {"migrations/0001_a.sql": {Data: []byte(`SELECT 1`)}, "migrations/0001_b.sql": {Data: []byte(`SELECT 1`)}},
	} {
		if err := pgmigrate.Apply(ctx, p, fsys, lockClass); err == nil {
			t.Errorf("%s: Apply accepted it", name)
		}
	}
	failing := fstest.MapFS{"migrations/0001_half.sql": {Data: []byte(`CREATE TABLE half (v int); SELECT * FROM missing;`)}}
	err := pgmigrate.Apply(ctx, p, failing, lockClass)
	if err == nil || !strings.Contains(err.Error(), "0001_half") {
		t.Fatalf("a failing migration: %v, want an error naming it", err)
	}
	var exists bool
	if err := p.QueryRow(ctx, `SELECT to_regclass('half') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("the failed migration's first statement was kept")
	}
}
