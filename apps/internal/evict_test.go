package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

// recorder is a WebSocket client subscribed to chats that records, for
// each message, every version it was sent (loads and updates, in order).
type recorder struct {
	name string
	conn *wsConn

	mu       sync.Mutex
	seen     map[string][]int64 // message ID → versions, in the order sent
	lastSeen map[string]int64
	nLoads   int
}

func (e *appEnv) record(name string, chats []string) *recorder {
	r := &recorder{name: name, conn: e.dial(), seen: map[string][]int64{}, lastSeen: map[string]int64{}}
	for _, ch := range chats {
		r.conn.send(`{"type":"sub","id":"` + ch + `"}`)
	}
	go func() {
		for {
			f, err := r.conn.read(context.Background())
			if err != nil {
				return // closed when the test ends
			}
			r.mu.Lock()
			if f.Type == "load" {
				r.nLoads++
			}
			for _, m := range f.Messages {
				r.seen[m.ID] = append(r.seen[m.ID], m.Version)
				r.lastSeen[m.ID] = m.Version
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *recorder) loads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nLoads
}

// regressions returns, for each message, a description of where the
// recorder was sent an older version after a newer one.
func (r *recorder) regressions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, vs := range r.seen {
		var top int64
		for i, v := range vs {
			if v < top {
				out = append(out, fmt.Sprintf("%s: %s sent v%d after v%d (frame %d of %v)", r.name, id, v, top, i, vs))
			}
			top = max(top, v)
		}
	}
	return out
}

// behind returns the messages whose last version sent is not the one in
// final.
func (r *recorder) behind(final map[string]change.Message) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, m := range final {
		if r.lastSeen[id] != m.Version {
			out = append(out, fmt.Sprintf("%s at v%d, want v%d", id, r.lastSeen[id], m.Version))
		}
	}
	return out
}

// TestRedisEvictingDuringAStormNeverShowsOlderVersions runs the app on a
// Redis of the test's own bounded to 2 MB (the stack's eviction policy) and
// with a memory of 64 KiB of messages, and storms it with 4 KiB messages
// through Kafka: each round a new version of every message, then late
// duplicates of older versions (as mirrored copies and replays bring them),
// while a lagging "writer" (the test, applying rounds to Postgres two rounds
// late, as the writer would) stores them. Redis evicts, memory forgets: a
// late duplicate of an evicted entry is stored again by the compare-and-set
// and taken for new, so the hub's per-client version floor is all that
// keeps it from clients. Recorders subscribed before the storm, and one that
// subscribes in its middle (its load read from Postgres ∪ an evicting
// Redis), must never be sent an older version of a message after a newer;
// the early ones end at every message's final version; once the writer has
// stored everything, a load (Postgres ∪ Redis) is exactly the final state.
func TestRedisEvictingDuringAStormNeverShowsOlderVersions(t *testing.T) {
	t.Parallel()
	redisAddr := stacktest.StartRedis(t, "2mb")
	e := newAppEnv(t, func(c *Config) {
		c.RedisAddr = redisAddr
		c.MemoryBytes = 64 << 10
	})
	e.waitConsuming()
	ctx := context.Background()

	const (
		chats    = 4
		perChat  = 200
		versions = 4
		bodySize = 4 << 10
	)
	chatIDs := make([]string, chats)
	var created []change.Chat
	for i := range chatIDs {
		chatIDs[i] = fmt.Sprintf("%s-c%d", e.prefix, i)
		created = append(created, chatdbtest.ChatNew(chatIDs[i], 1))
	}
	if _, err := e.db.Apply(ctx, "w@a", chatdb.Batch{Chats: created}); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", bodySize)
	version := func(chat string, i int, v int64) change.Message {
		return msg(chat, fmt.Sprintf("%s-m%d", chat, i), int64(i+1), v, fmt.Sprintf("v%d %s", v, body))
	}
	final := map[string]change.Message{}
	rounds := make([][]change.Message, versions+1)
	for v := int64(1); v <= versions; v++ {
		for _, ch := range chatIDs {
			for i := range perChat {
				m := version(ch, i, v)
				rounds[v] = append(rounds[v], m)
				final[m.ID] = m
			}
		}
	}

	early := []*recorder{e.record("early-1", chatIDs), e.record("early-2", chatIDs)}
	waitFor(t, "the early recorders' loads", func() error {
		for _, r := range early {
			if n := r.loads(); n < chats {
				return fmt.Errorf("%s: %d loads", r.name, n)
			}
		}
		return nil
	})
	rng := rand.New(rand.NewPCG(17, 1))
	var late *recorder
	for v := 1; v <= versions; v++ {
		e.produceMessages(rounds[v]...)
		// Late duplicates of older versions of half the messages.
		if v > 1 {
			var dups []change.Message
			for i := range rounds[v] { // every round lists the messages in one order
				if rng.IntN(2) == 0 {
					dups = append(dups, rounds[1+rng.IntN(v-1)][i])
				}
			}
			e.produceMessages(dups...)
		}
		// The writer, two rounds behind.
		if v > 2 {
			if _, err := e.db.Apply(ctx, "w@a", chatdb.Batch{Messages: rounds[v-2]}); err != nil {
				t.Fatal(err)
			}
		}
		if v == versions/2 {
			late = e.record("late", chatIDs)
		}
	}
	for v := versions - 1; v <= versions; v++ {
		if _, err := e.db.Apply(ctx, "w@a", chatdb.Batch{Messages: rounds[v]}); err != nil {
			t.Fatal(err)
		}
	}

	// Every final version sent to the early recorders (a bounded wait, not
	// fatal: the regressions, if any, are the finding to report first).
	var behind []string
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		behind = nil
		for _, r := range early {
			if b := r.behind(final); len(b) > 0 {
				behind = append(behind, fmt.Sprintf("%s: %d behind, e.g. %s", r.name, len(b), b[0]))
			}
		}
		if len(behind) == 0 {
			break
		}
	}
	for _, r := range append(early, late) {
		if regs := r.regressions(); len(regs) > 0 {
			t.Errorf("%d regressions, e.g. %s", len(regs), strings.Join(regs[:min(len(regs), 5)], "; "))
		}
	}
	if len(behind) > 0 {
		t.Fatalf("not sent every final version within a minute: %v", behind)
	}
	for _, ch := range chatIDs {
		got, err := e.restAll(ch, 200)
		if err != nil || len(got) != perChat {
			t.Fatalf("load of %s: %d messages, %v; want %d", ch, len(got), err, perChat)
		}
		for _, m := range got {
			if m.Version != final[m.ID].Version || m.Content != final[m.ID].Content {
				t.Errorf("load of %s: %s at v%d, want v%d", ch, m.ID, m.Version, final[m.ID].Version)
			}
		}
	}

	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rdb.Close() })
	evicted, err := stacktest.RedisEvictedKeys(ctx, rdb)
	if err != nil || evicted == 0 {
		t.Fatalf("evicted_keys = %d, %v; want some: the storm did not make Redis evict", evicted, err)
	}
	mfs, err := stacktest.ScrapeMetrics(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	forgotten := 0.0
	for _, m := range mfs["internal_memory_evictions_total"].GetMetric() {
		forgotten += m.GetCounter().GetValue()
	}
	if forgotten == 0 {
		t.Fatal("internal_memory_evictions_total = 0: memory never forgot, so only it was tested, not the version floor")
	}
	t.Logf("Redis evicted %d keys, memory forgot %v entries; %d recorders, no regression", evicted, forgotten, len(early)+1)
}

// TestPostgresLagBehindTheCache caches a message Postgres does not have:
// internal_cache_postgres_behind_seconds grows past a second; once the
// "writer" stored it, the gauge falls back to 0. The window is exported.
func TestPostgresLagBehindTheCache(t *testing.T) {
	t.Parallel()
	e := newAppEnv(t, nil)
	e.waitConsuming()
	chat := e.prefix + "-c"
	m := msg(chat, "m1", 1, 3, "v3")
	e.produceMessages(m)
	gauge := func(name string) (float64, error) {
		mfs, err := stacktest.ScrapeMetrics(e.url + "/metrics")
		if err != nil {
			return 0, err
		}
		mf := mfs[name]
		if mf == nil || len(mf.GetMetric()) != 1 {
			return 0, fmt.Errorf("no %s", name)
		}
		return mf.GetMetric()[0].GetGauge().GetValue(), nil
	}
	if w, err := gauge("internal_cache_window_seconds"); err != nil || w != e.cfg.CacheTTL.Seconds() {
		t.Fatalf("internal_cache_window_seconds = %v, %v; want %v", w, err, e.cfg.CacheTTL.Seconds())
	}
	waitFor(t, "the gauge to show Postgres behind by over a second", func() error {
		if v, err := gauge("internal_cache_postgres_behind_seconds"); err != nil || v <= 1 {
			return fmt.Errorf("%v, %v", v, err)
		}
		return nil
	})
	if _, err := e.db.Apply(context.Background(), "w@a", chatdb.Batch{Messages: []change.Message{m}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the gauge to fall back to 0 once Postgres has it", func() error {
		if v, err := gauge("internal_cache_postgres_behind_seconds"); err != nil || v != 0 {
			return fmt.Errorf("%v, %v", v, err)
		}
		return nil
	})
}
