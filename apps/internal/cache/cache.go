// Package cache keeps the recent versions of messages and chats in Redis,
// written only by compare-and-set on the version (Lua scripts with
// KEYS/ARGV), each entry with a TTL: the live path learns from a script's
// answer whether a change is new, and a chat's load merges the cache with
// Postgres for the messages the writer has not stored yet.
//
// The cache covers the window between a change reaching Kafka and its row
// reaching Postgres (the writer's lag), so its entries live for a window of
// minutes, not for a day. A chat's index of message IDs is a sorted set
// scored by each entry's expiry: every write trims the IDs whose entry has
// expired, and a read removes those whose entry is gone before its expiry
// (evicted under maxmemory). Nothing here relies on an entry surviving:
// Redis may evict any key at any time.
//
// Each instance of the app has a namespace of its own (its consumer group,
// stable across restarts): "applied" means new *for that instance's
// clients*, so every instance pushes every change once, whichever consumed
// it first, and a restarted instance does not push again what it pushed
// before. One chat's keys share the hash tag {chatID}
// ("internal-a1:chat:{c1}:msg:m1", "…:chat:{c1}:msgs", "…:chat:{c1}"), so
// the scripts also run on Redis Cluster.
package cache

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatpoc/chat-poc/internal/change"
)

// Result is a compare-and-set's answer, as the original's
// updateByTimestamp and deleteByTimestamp scripts gave it.
type Result int

// The answers of the scripts.
const (
	// Absent: no entry was stored (put: the change is stored now; delete:
	// nothing to delete).
	Absent Result = -1
	// Newer: the stored entry's version is newer than (or equal to) the
	// change's; nothing changed.
	Newer Result = 0
	// Done: the stored entry was older and is replaced (put) or removed
	// (delete).
	Done Result = 1
)

// Applied reports whether a put stored the change.
func (r Result) Applied() bool { return r == Absent || r == Done }

// updateByTimestamp stores ARGV[2] under KEYS[1] if ARGV[1] (a version) is
// newer than the stored one, with a TTL of ARGV[3] ms, and indexes ARGV[4]
// in KEYS[2] if given (trimming the index of expired IDs).
//
//go:embed update_by_timestamp.lua
var updateByTimestampLua string

// deleteByTimestamp removes KEYS[1] if its version is at most ARGV[1], and
// ARGV[2] from the index KEYS[2] if given.
//
//go:embed delete_by_timestamp.lua
var deleteByTimestampLua string

// trimIndex removes from the index KEYS[1] each ID ARGV[i] whose entry
// KEYS[i+1] does not exist.
//
//go:embed trim_index.lua
var trimIndexLua string

var (
	updateByTimestamp = redis.NewScript(updateByTimestampLua)
	deleteByTimestamp = redis.NewScript(deleteByTimestampLua)
	trimIndex         = redis.NewScript(trimIndexLua)
)

// Cache reads and writes one instance's share of the Redis cache.
type Cache struct {
	rdb redis.UniversalClient
	ttl time.Duration
	ns  string
}

// New returns the cache of namespace ns (an instance's stable name, without
// braces) on rdb, whose entries live ttl after their last write.
func New(rdb redis.UniversalClient, ttl time.Duration, ns string) *Cache {
	return &Cache{rdb: rdb, ttl: ttl, ns: ns}
}

// Window returns how long an entry lives after its last write.
func (c *Cache) Window() time.Duration { return c.ttl }

func (c *Cache) messageKey(chatID, id string) string { return c.chatKey(chatID) + ":msg:" + id }

// indexKey names a chat's index, a sorted set. (":msgs", the name of the
// plain set it was before, is left to expire: a sorted-set command on it
// would fail with WRONGTYPE.)
func (c *Cache) indexKey(chatID string) string { return c.chatKey(chatID) + ":idx" }
func (c *Cache) chatKey(chatID string) string  { return c.ns + ":chat:{" + chatID + "}" }

// PutMessage stores m if its version is newer than the cached one, and
// indexes it under its chat.
func (c *Cache) PutMessage(ctx context.Context, m change.Message) (Result, error) {
	v, err := json.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("encode message %s: %w", m.ID, err)
	}
	r, err := c.run(ctx, updateByTimestamp, []string{c.messageKey(m.ChatID, m.ID), c.indexKey(m.ChatID)},
		m.Version, v, c.ttl.Milliseconds(), m.ID)
	if err != nil {
		return 0, fmt.Errorf("cache message %s v%d: %w", m.ID, m.Version, err)
	}
	return r, nil
}

// PutChat stores chat event ch if its version is newer than the cached one.
func (c *Cache) PutChat(ctx context.Context, ch change.Chat) (Result, error) {
	v, err := json.Marshal(ch)
	if err != nil {
		return 0, fmt.Errorf("encode chat %s: %w", ch.ID, err)
	}
	r, err := c.run(ctx, updateByTimestamp, []string{c.chatKey(ch.ID)}, ch.Version, v, c.ttl.Milliseconds(), "")
	if err != nil {
		return 0, fmt.Errorf("cache chat %s v%d: %w", ch.ID, ch.Version, err)
	}
	return r, nil
}

// DeleteMessage removes message id of chat chatID from the cache if its
// cached version is at most version.
func (c *Cache) DeleteMessage(ctx context.Context, chatID, id string, version int64) (Result, error) {
	r, err := c.run(ctx, deleteByTimestamp, []string{c.messageKey(chatID, id), c.indexKey(chatID)}, version, id)
	if err != nil {
		return 0, fmt.Errorf("uncache message %s v%d: %w", id, version, err)
	}
	return r, nil
}

func (c *Cache) run(ctx context.Context, s *redis.Script, keys []string, args ...any) (Result, error) {
	n, err := s.Run(ctx, c.rdb, keys, args...).Int()
	if err != nil {
		return 0, err
	}
	switch r := Result(n); r {
	case Absent, Newer, Done:
		return r, nil
	}
	return 0, fmt.Errorf("script answered %d", n)
}

// Messages returns the cached messages of chat chatID, in no order. An
// indexed entry that is gone (expired, or evicted under maxmemory) is
// skipped, and its ID removed from the index.
func (c *Cache) Messages(ctx context.Context, chatID string) ([]change.Message, error) {
	ids, err := c.IndexedIDs(ctx, chatID)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	pipe := c.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		gets[i] = pipe.HGet(ctx, c.messageKey(chatID, id), "d")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read cached messages of chat %s: %w", chatID, err)
	}
	msgs := make([]change.Message, 0, len(ids))
	var gone []string
	for i, g := range gets {
		b, err := g.Bytes()
		if errors.Is(err, redis.Nil) {
			gone = append(gone, ids[i])
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read cached message %s: %w", ids[i], err)
		}
		var m change.Message
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("decode cached message %s: %w", ids[i], err)
		}
		msgs = append(msgs, m)
	}
	if len(gone) > 0 {
		if err := c.trim(ctx, chatID, gone); err != nil {
			return nil, err
		}
	}
	return msgs, nil
}

// IndexedIDs returns the IDs in chat chatID's index, in no order: those of
// its cached messages, and of entries gone since (until a write or a read
// trims them).
func (c *Cache) IndexedIDs(ctx context.Context, chatID string) ([]string, error) {
	ids, err := c.rdb.ZRange(ctx, c.indexKey(chatID), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read the index of chat %s: %w", chatID, err)
	}
	return ids, nil
}

// trim removes ids from chat chatID's index if their entries are still gone.
func (c *Cache) trim(ctx context.Context, chatID string, ids []string) error {
	keys := make([]string, 0, len(ids)+1)
	keys = append(keys, c.indexKey(chatID))
	args := make([]any, len(ids))
	for i, id := range ids {
		keys = append(keys, c.messageKey(chatID, id))
		args[i] = id
	}
	if err := trimIndex.Run(ctx, c.rdb, keys, args...).Err(); err != nil {
		return fmt.Errorf("trim the index of chat %s: %w", chatID, err)
	}
	return nil
}

// Chat returns the cached event of chat id, and false if none is cached.
func (c *Cache) Chat(ctx context.Context, id string) (change.Chat, bool, error) {
	b, err := c.rdb.HGet(ctx, c.chatKey(id), "d").Bytes()
	if errors.Is(err, redis.Nil) {
		return change.Chat{}, false, nil
	}
	if err != nil {
		return change.Chat{}, false, fmt.Errorf("read cached chat %s: %w", id, err)
	}
	var ch change.Chat
	if err := json.Unmarshal(b, &ch); err != nil {
		return change.Chat{}, false, fmt.Errorf("decode cached chat %s: %w", id, err)
	}
	return ch, true, nil
}

// Version returns the cached version of message id of chat chatID, 0 if
// none.
func (c *Cache) Version(ctx context.Context, chatID, id string) (int64, error) {
	s, err := c.rdb.HGet(ctx, c.messageKey(chatID, id), "v").Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(s, 10, 64)
}

// Ping reports whether Redis answers.
func (c *Cache) Ping(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }
