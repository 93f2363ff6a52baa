package cache_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatpoc/chat-poc/apps/internal/cache"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

// ns is the namespace of the tests' caches.
const ns = "test"

// newCache returns a cache on the shared stack's Redis with entries living
// ttl, and a chat ID no other test uses.
func newCache(t *testing.T, ttl time.Duration) (*cache.Cache, *redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: stacktest.Env(t, stacktest.Connect(t), devstack.EnvRedisAddr)})
	t.Cleanup(func() { rdb.Close() })
	return cache.New(rdb, ttl, ns), rdb, stacktest.UniqueName("chat")
}

func msg(chat, id string, v int64, content string) change.Message {
	return chatdbtest.Msg(id, chat, 1, v, content, false)
}

// TestPutMessageAnswersLikeUpdateByTimestamp walks one message through every
// answer of the compare-and-set: absent, replaced, equal and older versions
// refused; the stored entry is always the newest.
func TestPutMessageAnswersLikeUpdateByTimestamp(t *testing.T) {
	t.Parallel()
	c, _, chat := newCache(t, time.Hour)
	ctx := context.Background()
	steps := []struct {
		name string
		m    change.Message
		want cache.Result
		kept int64 // the version cached after the step
	}{
		{"absent: stored", msg(chat, "m", 5, "v5"), cache.Absent, 5},
		{"newer: replaces", msg(chat, "m", 7, "v7"), cache.Done, 7},
		{"equal: refused", msg(chat, "m", 7, "v7 again"), cache.Newer, 7},
		{"older: refused", msg(chat, "m", 6, "v6"), cache.Newer, 7},
		{"another message: absent", msg(chat, "n", 1, "n1"), cache.Absent, 1},
	}
	for _, s := range steps {
		got, err := c.PutMessage(ctx, s.m)
		if err != nil || got != s.want {
			t.Fatalf("%s: PutMessage = %v, %v; want %v", s.name, got, err, s.want)
		}
		if got.Applied() != (s.want != cache.Newer) {
			t.Fatalf("%s: Applied() = %v", s.name, got.Applied())
		}
		if v, err := c.Version(ctx, chat, s.m.ID); err != nil || v != s.kept {
			t.Fatalf("%s: cached version %d, %v; want %d", s.name, v, err, s.kept)
		}
	}
	msgs, err := c.Messages(ctx, chat)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]change.Message{}
	for _, m := range msgs {
		byID[m.ID] = m
	}
	if len(byID) != 2 || byID["m"].Content != "v7" || byID["n"].Content != "n1" {
		t.Fatalf("Messages = %+v, want m at v7 and n at v1", msgs)
	}
}

// TestEntriesExpire checks the TTL of a message, its chat's index and a
// chat entry, and that a message whose entry expired is not returned.
func TestEntriesExpire(t *testing.T) {
	t.Parallel()
	const ttl = time.Hour
	c, rdb, chat := newCache(t, ttl)
	ctx := context.Background()
	if _, err := c.PutMessage(ctx, msg(chat, "m", 1, "x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutChat(ctx, change.Chat{Type: change.ChatNew, ID: chat, Version: 1}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{ns + ":chat:{" + chat + "}:msg:m", ns + ":chat:{" + chat + "}:idx", ns + ":chat:{" + chat + "}"} {
		d, err := rdb.PTTL(ctx, key).Result()
		if err != nil || d <= 0 || d > ttl {
			t.Errorf("TTL of %s = %v, %v; want in (0, %v]", key, d, err, ttl)
		}
	}
	// A short-lived cache's entry is gone after its TTL; the index that
	// still names it is tolerated.
	short := cache.New(rdb, 50*time.Millisecond, ns)
	if _, err := short.PutMessage(ctx, msg(chat, "brief", 1, "x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutMessage(ctx, msg(chat, "m", 2, "y")); err != nil { // the index lives on
		t.Fatal(err)
	}
	stacktest.WaitFor(t, 10*time.Second, "the short-lived entry to expire", func() error {
		if n, err := rdb.Exists(ctx, ns+":chat:{"+chat+"}:msg:brief").Result(); err != nil || n != 0 {
			return fmt.Errorf("exists = %d, %v", n, err)
		}
		return nil
	})
	msgs, err := c.Messages(ctx, chat)
	if err != nil || len(msgs) != 1 || msgs[0].ID != "m" {
		t.Fatalf("Messages = %+v, %v; want only m", msgs, err)
	}
}

// TestDeleteMessageAnswersLikeDeleteByTimestamp walks every answer of the
// delete: absent, a newer version kept, removed.
func TestDeleteMessageAnswersLikeDeleteByTimestamp(t *testing.T) {
	t.Parallel()
	c, _, chat := newCache(t, time.Hour)
	ctx := context.Background()
	if r, err := c.DeleteMessage(ctx, chat, "m", 3); err != nil || r != cache.Absent {
		t.Fatalf("delete of an absent entry = %v, %v; want Absent", r, err)
	}
	if _, err := c.PutMessage(ctx, msg(chat, "m", 5, "v5")); err != nil {
		t.Fatal(err)
	}
	if r, err := c.DeleteMessage(ctx, chat, "m", 4); err != nil || r != cache.Newer {
		t.Fatalf("delete by an older version = %v, %v; want Newer", r, err)
	}
	if r, err := c.DeleteMessage(ctx, chat, "m", 5); err != nil || r != cache.Done {
		t.Fatalf("delete by the same version = %v, %v; want Done", r, err)
	}
	if msgs, err := c.Messages(ctx, chat); err != nil || len(msgs) != 0 {
		t.Fatalf("Messages after the delete = %+v, %v; want none", msgs, err)
	}
}

// TestConcurrentPutsKeepTheNewest races 32 goroutines putting shuffled
// versions of the same messages: each message ends at its highest version,
// and exactly one put per message answered Absent.
func TestConcurrentPutsKeepTheNewest(t *testing.T) {
	t.Parallel()
	c, _, chat := newCache(t, time.Hour)
	ctx := context.Background()
	const (
		writers  = 32
		messages = 10
		versions = 50
	)
	var mu sync.Mutex
	absent := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for _, i := range r.Perm(messages * versions) {
				id, v := fmt.Sprintf("m%d", i%messages), int64(i/messages+1)
				res, err := c.PutMessage(ctx, msg(chat, id, v, fmt.Sprintf("%s v%d", id, v)))
				if err != nil {
					errs <- err
					return
				}
				if res == cache.Absent {
					mu.Lock()
					absent[id]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	msgs, err := c.Messages(ctx, chat)
	if err != nil || len(msgs) != messages {
		t.Fatalf("Messages = %d, %v; want %d", len(msgs), err, messages)
	}
	for _, m := range msgs {
		if m.Version != versions || m.Content != fmt.Sprintf("%s v%d", m.ID, versions) {
			t.Errorf("message %s cached at v%d %q, want v%d", m.ID, m.Version, m.Content, versions)
		}
		if absent[m.ID] != 1 {
			t.Errorf("message %s: %d puts answered Absent, want 1", m.ID, absent[m.ID])
		}
	}
}

// TestNamespacesAreApart puts the same version of a message in two
// instances' namespaces: each answers Absent, as each instance's clients
// have yet to get it.
func TestNamespacesAreApart(t *testing.T) {
	t.Parallel()
	a, rdb, chat := newCache(t, time.Hour)
	b := cache.New(rdb, time.Hour, "other")
	for _, c := range []*cache.Cache{a, b} {
		if r, err := c.PutMessage(context.Background(), msg(chat, "m", 1, "x")); err != nil || r != cache.Absent {
			t.Fatalf("PutMessage = %v, %v; want Absent in each namespace", r, err)
		}
	}
}

// TestPutChat caches chat events by version: a delete replaces the
// creation, a late creation does not bring the chat back.
func TestPutChat(t *testing.T) {
	t.Parallel()
	c, _, chat := newCache(t, time.Hour)
	ctx := context.Background()
	if _, ok, err := c.Chat(ctx, chat); err != nil || ok {
		t.Fatalf("Chat of an uncached chat: ok %v, %v", ok, err)
	}
	for _, s := range []struct {
		ev   change.Chat
		want cache.Result
	}{
		{change.Chat{Type: change.ChatDelete, ID: chat, Version: 9}, cache.Absent},
		{change.Chat{Type: change.ChatNew, ID: chat, Version: 2}, cache.Newer},
	} {
		if r, err := c.PutChat(ctx, s.ev); err != nil || r != s.want {
			t.Fatalf("PutChat(%+v) = %v, %v; want %v", s.ev, r, err, s.want)
		}
	}
	if ev, ok, err := c.Chat(ctx, chat); err != nil || !ok || ev.Type != change.ChatDelete {
		t.Fatalf("Chat = %+v, %v, %v; want the delete", ev, ok, err)
	}
}

// TestIndexIsTrimmed checks that a chat's index names only entries that
// exist: an expired entry's ID leaves it at the chat's next write, and the
// ID of an entry gone before its expiry (as an eviction under maxmemory
// leaves it) at the next read.
func TestIndexIsTrimmed(t *testing.T) {
	t.Parallel()
	c, rdb, chat := newCache(t, time.Hour)
	ctx := context.Background()
	short := cache.New(rdb, 50*time.Millisecond, ns)
	if _, err := short.PutMessage(ctx, msg(chat, "brief", 1, "x")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"evicted", "kept"} {
		if _, err := c.PutMessage(ctx, msg(chat, id, 1, id)); err != nil {
			t.Fatal(err)
		}
	}
	stacktest.WaitFor(t, 10*time.Second, "the short-lived entry to expire", func() error {
		if n, err := rdb.Exists(ctx, ns+":chat:{"+chat+"}:msg:brief").Result(); err != nil || n != 0 {
			return fmt.Errorf("exists = %d, %v", n, err)
		}
		return nil
	})
	if _, err := c.PutMessage(ctx, msg(chat, "written", 1, "w")); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, c, chat, "after a write", "evicted", "kept", "written")

	if err := rdb.Del(ctx, ns+":chat:{"+chat+"}:msg:evicted").Err(); err != nil {
		t.Fatal(err)
	}
	if msgs, err := c.Messages(ctx, chat); err != nil || len(msgs) != 2 {
		t.Fatalf("Messages = %+v, %v; want kept and written", msgs, err)
	}
	checkIndex(t, c, chat, "after a read", "kept", "written")
}

// TestIndexUnderEviction fills a Redis of the test's own, bounded to 8 MB,
// with 12 MB of messages of 20 chats: Redis evicts (INFO's evicted_keys), and
// after a read of the chat written last its index names only entries that
// exist.
func TestIndexUnderEviction(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: stacktest.StartRedis(t, "8mb")})
	t.Cleanup(func() { rdb.Close() })
	c, prefix := cache.New(rdb, time.Hour, ns), stacktest.UniqueName("chat")
	ctx := context.Background()
	const (
		chats = 20
		puts  = 3000
	)
	body := strings.Repeat("x", 4<<10)
	chat := func(i int) string { return fmt.Sprintf("%s-%d", prefix, i%chats) }
	for i := range puts {
		if _, err := c.PutMessage(ctx, msg(chat(i), fmt.Sprintf("m%d", i), 1, body)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	evicted, err := stacktest.RedisEvictedKeys(ctx, rdb)
	if err != nil || evicted == 0 {
		t.Fatalf("evicted_keys = %d, %v; want some", evicted, err)
	}
	// Evictions stop before the read: the read's own reply buffers would
	// push a full Redis over its bound and evict more, which no read can
	// keep up with; what is checked is that a read trims what was evicted.
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	last := chat(puts - 1)
	msgs, err := c.Messages(ctx, last)
	if err != nil || len(msgs) == 0 || len(msgs) >= puts/chats {
		t.Fatalf("Messages = %d, %v; want some, not all %d", len(msgs), err, puts/chats)
	}
	ids, err := c.IndexedIDs(ctx, last)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if n, err := rdb.Exists(ctx, ns+":chat:{"+last+"}:msg:"+id).Result(); err != nil || n != 1 {
			t.Errorf("the index names %s, whose entry is gone (exists %d, %v)", id, n, err)
		}
	}
	t.Logf("%d keys evicted; %d of %d messages of the chat left, %d indexed", evicted, len(msgs), puts/chats, len(ids))
}

// checkIndex fails the test unless chat's index holds exactly want.
func checkIndex(t *testing.T, c *cache.Cache, chat, when string, want ...string) {
	t.Helper()
	ids, err := c.IndexedIDs(context.Background(), chat)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, want) {
		t.Fatalf("%s: the index holds %v, want %v", when, ids, want)
	}
}
