package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/apps/external/store"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
)

// freshDSN returns the DSN of a new, empty database on the shared stack.
func freshDSN(t *testing.T) string {
	t.Helper()
	return stacktest.FreshDatabase(t, stacktest.Connect(t))
}

// openPool opens a pool on dsn, closed when the test ends.
func openPool(t *testing.T, dsn string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	return stacktest.Pool(t, dsn, maxConns)
}

// openStore migrates the database of dsn and returns a Store on it, closed
// when the test ends, with its pool.
func openStore(t *testing.T, dsn string, maxConns int32, opts store.Options) (*store.Store, *pgxpool.Pool) {
	t.Helper()
	pool := openPool(t, dsn, maxConns)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	s := store.New(pool, opts)
	t.Cleanup(s.Close)
	return s, pool
}

// newStore returns a Store on a fresh, migrated database.
func newStore(t *testing.T, opts store.Options) (*store.Store, *pgxpool.Pool) {
	t.Helper()
	return openStore(t, freshDSN(t), 8, opts)
}

// readChanges reads the feed from cursor until it has returned want changes,
// waiting for them with Wait, and fails the test if they do not arrive
// within 10 s. It returns the changes and the cursor after them.
func readChanges(t *testing.T, s *store.Store, cursor string, want int) ([]store.Change, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var got []store.Change
	for len(got) < want {
		page, next, err := s.Changes(ctx, cursor, want-len(got))
		if err != nil {
			t.Fatalf("read changes after %d of %d: %v", len(got), want, err)
		}
		got, cursor = append(got, page...), next
		if len(page) > 0 {
			continue
		}
		if err := s.Wait(ctx, cursor); err != nil {
			t.Fatalf("wait for changes after %d of %d: %v", len(got), want, err)
		}
	}
	return got, cursor
}

// mustNotFound fails the test unless err is store.ErrNotFound.
func mustNotFound(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

// newStoreWithChat is a Store over a fresh database that holds one chat.
func newStoreWithChat(t *testing.T) (*store.Store, store.Chat) {
	t.Helper()
	s, _ := newStore(t, store.Options{})
	chat, err := s.CreateChat(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s, chat
}
