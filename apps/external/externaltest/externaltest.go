// Package externaltest runs the external service in-process for tests, over a
// fresh database of the shared test stack's Postgres.
package externaltest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/apps/external/api"
	"github.com/chatpoc/chat-poc/apps/external/store"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
)

// UIPage is the body of the stand-in UI page served at / (the real UI is
// tested in a browser against the real binary).
const UIPage = "<h1>external</h1>"

// NewServer serves the external API over a fresh database; everything is
// closed when the test ends.
func NewServer(t testing.TB, cfg api.Config) *httptest.Server {
	t.Helper()
	srv, _ := NewServerWithStore(t, cfg)
	return srv
}

// NewServerWithStore is NewServer, and returns the server's store too: a
// test can read the feed as the server would while the server's feed is
// paused (Faults.FeedPaused).
func NewServerWithStore(t testing.TB, cfg api.Config) (*httptest.Server, *store.Store) {
	t.Helper()
	stack := stacktest.Connect(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, stacktest.FreshDatabase(t, stack))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	st := store.New(pool, store.Options{})
	t.Cleanup(st.Close)
	if cfg.Ping == nil {
		cfg.Ping = pool.Ping
	}
	ui := fstest.MapFS{"index.html": {Data: []byte(UIPage)}}
	srv := httptest.NewServer(api.New(st, ui, cfg, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv, st
}
