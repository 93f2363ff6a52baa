package live

import (
	"container/list"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatpoc/chat-poc/internal/change"
)

// Memory's entries live as long as the Redis cache's (the app's
// INTERNAL_CACHE_TTL, 5 min by default: the window between Kafka and
// Postgres that both cover), and within that window its bounds are in bytes
// of the strings it holds plus entryOverhead per entry. A message may be
// ~40 KB (the writer takes values up to 256 KiB), so a bound by count would
// not bound memory. The messages' bound is the app's
// INTERNAL_MEMORY_MESSAGE_BYTES (32 MiB: a small share of the instance's
// 256 MiB limit in deploy/k8s). At 200 changes/s of the load generator's
// ~100-byte messages the window holds ~13 MiB (~38,000 messages) and the
// bounds are not reached; larger messages reach the bound first.
//
// Without the window, memory only ever filled: in the 1-hour soak at 200
// writes/s the messages reached their bound at minute 13, and the chats,
// ~240 new ones a minute, would have reached theirs after an hour, so the
// instance grew ~0.5 MB a minute all that time.
const (
	// DefaultChatBytes bounds the chat events Memory holds (~300 bytes
	// each: ~14,000 chats).
	DefaultChatBytes = 4 << 20
	// entryOverhead approximates what one held entry costs beyond its
	// strings: the struct, its list element and its map entry.
	entryOverhead = 256
)

// Memory is the in-process stand-in for the Redis cache: the most recent
// versions of messages and chats this instance has seen within the cache's
// window, within a bound in bytes for each. While Redis is down it decides which changes are new and
// serves the loads; when Redis is back it is written back there.
//
// It forgets an entry written longer than its window ago (counted in
// internal_memory_expired_total), and at its bound in bytes the least
// recently written entries (counted in internal_memory_evictions_total). A
// forgotten message is no longer in the loads it serves while Redis is down
// (Postgres has it once the writer stored it), and a late duplicate of an older version of it is taken for
// new: it may be pushed, and each client's version floor (the hub's) keeps
// it from any client that was sent a newer one. A forgotten chat event no
// longer lists a chat the writer has not stored yet, nor hides one whose
// delete it has not stored yet.
type Memory struct {
	mu    sync.Mutex
	ttl   time.Duration
	now   func() time.Time // the clock (tests move it)
	msgs  *lru[change.Message]
	chats *lru[change.Chat]
}

// NewMemory returns an empty memory holding the messages and chat events
// written in the last ttl, at most messageBytes of messages and chatBytes
// of chat events, its size and what it forgot counted in reg
// (internal_memory_bytes, internal_memory_entries,
// internal_memory_expired_total and internal_memory_evictions_total, by
// kind).
func NewMemory(ttl time.Duration, messageBytes, chatBytes int64, reg prometheus.Registerer) *Memory {
	bytes := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "internal_memory_bytes", Help: "Bytes held by the in-process stand-in for Redis (strings plus a fixed overhead per entry), by kind.",
	}, []string{"kind"})
	entries := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "internal_memory_entries", Help: "Entries held by the in-process stand-in for Redis, by kind.",
	}, []string{"kind"})
	evictions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "internal_memory_evictions_total", Help: "Entries the in-process stand-in for Redis forgot at its bound in bytes (least recently written first), by kind.",
	}, []string{"kind"})
	expired := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "internal_memory_expired_total", Help: "Entries the in-process stand-in for Redis forgot because they were written longer than the cache window (INTERNAL_CACHE_TTL) ago, by kind.",
	}, []string{"kind"})
	reg.MustRegister(bytes, entries, evictions, expired)
	gauges := func(k change.Kind) lruMetrics {
		l := k.String()
		return lruMetrics{bytes.WithLabelValues(l), entries.WithLabelValues(l), evictions.WithLabelValues(l), expired.WithLabelValues(l)}
	}
	return &Memory{
		ttl:   ttl,
		now:   time.Now,
		msgs:  newLRU[change.Message](messageBytes, gauges(change.KindMessage)),
		chats: newLRU[change.Chat](chatBytes, gauges(change.KindChat)),
	}
}

// PutMessage keeps m if it is newer than the version held, and reports
// whether it did.
func (mem *Memory) PutMessage(m change.Message) bool {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	now := mem.expire()
	if old, ok := mem.msgs.get(m.ID); ok && old.Version >= m.Version {
		return false
	}
	mem.msgs.put(m.ID, m, int64(len(m.ID)+len(m.ChatID)+len(m.Content)), now)
	return true
}

// PutChat keeps c if it is newer than the chat's event held, and reports
// whether it did.
func (mem *Memory) PutChat(c change.Chat) bool {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	now := mem.expire()
	if old, ok := mem.chats.get(c.ID); ok && old.Version >= c.Version {
		return false
	}
	mem.chats.put(c.ID, c, int64(len(c.ID)), now)
	return true
}

// Messages returns the held messages of chat chatID.
func (mem *Memory) Messages(chatID string) []change.Message {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	mem.expire()
	var out []change.Message
	for m := range mem.msgs.values {
		if m.ChatID == chatID {
			out = append(out, m)
		}
	}
	return out
}

// Chat returns the held event of chat id.
func (mem *Memory) Chat(id string) (change.Chat, bool) {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	mem.expire()
	return mem.chats.get(id)
}

// Chats returns the held chat events.
func (mem *Memory) Chats() []change.Chat {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	mem.expire()
	return mem.chats.all()
}

// All returns every held message and chat event, for writing back to Redis.
func (mem *Memory) All() ([]change.Message, []change.Chat) {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	mem.expire()
	return mem.msgs.all(), mem.chats.all()
}

// Size returns the bytes Memory holds (as its bounds count them) of
// messages and of chat events.
func (mem *Memory) Size() (messageBytes, chatBytes int64) {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	mem.expire()
	return mem.msgs.bytes, mem.chats.bytes
}

// expire forgets the entries written longer than the window ago, and
// returns the time it took for now. mem.mu must be held.
func (mem *Memory) expire() time.Time {
	now := mem.now()
	mem.msgs.expire(now.Add(-mem.ttl))
	mem.chats.expire(now.Add(-mem.ttl))
	return now
}

// lru holds values by ID within max bytes, forgetting the least recently
// put first. Not safe for concurrent use (Memory locks).
type lru[T any] struct {
	max     int64
	bytes   int64
	order   *list.List // of *lruEntry[T], least recently put at the front
	byID    map[string]*list.Element
	metrics lruMetrics
}

type lruEntry[T any] struct {
	id    string
	value T
	size  int64
	at    time.Time // when it was put
}

type lruMetrics struct {
	bytes, entries     prometheus.Gauge
	evictions, expired prometheus.Counter
}

func newLRU[T any](maxBytes int64, m lruMetrics) *lru[T] {
	return &lru[T]{max: maxBytes, order: list.New(), byID: map[string]*list.Element{}, metrics: m}
}

func (l *lru[T]) get(id string) (T, bool) {
	if e, ok := l.byID[id]; ok {
		return e.Value.(*lruEntry[T]).value, true
	}
	var zero T
	return zero, false
}

// put holds v under id (replacing what was held), put at now, its size the
// bytes of its strings, then forgets the least recently put entries while
// over the bound — never the one just put (one entry larger than the bound
// is held alone).
func (l *lru[T]) put(id string, v T, size int64, now time.Time) {
	if e, ok := l.byID[id]; ok {
		l.remove(e)
	}
	size += entryOverhead
	l.byID[id] = l.order.PushBack(&lruEntry[T]{id: id, value: v, size: size, at: now})
	l.bytes += size
	for l.bytes > l.max && l.order.Len() > 1 {
		l.remove(l.order.Front())
		l.metrics.evictions.Inc()
	}
	l.meter()
}

// expire forgets the entries put before since. The least recently put
// entry is at the front, so it stops at the first one put since then.
func (l *lru[T]) expire(since time.Time) {
	n := 0
	for e := l.order.Front(); e != nil && e.Value.(*lruEntry[T]).at.Before(since); e = l.order.Front() {
		l.remove(e)
		n++
	}
	if n > 0 {
		l.metrics.expired.Add(float64(n))
		l.meter()
	}
}

func (l *lru[T]) meter() {
	l.metrics.bytes.Set(float64(l.bytes))
	l.metrics.entries.Set(float64(l.order.Len()))
}

func (l *lru[T]) remove(e *list.Element) {
	en := l.order.Remove(e).(*lruEntry[T])
	delete(l.byID, en.id)
	l.bytes -= en.size
}

// values yields the held values, least recently put first.
func (l *lru[T]) values(yield func(T) bool) {
	for e := l.order.Front(); e != nil; e = e.Next() {
		if !yield(e.Value.(*lruEntry[T]).value) {
			return
		}
	}
}

func (l *lru[T]) all() []T {
	out := make([]T, 0, l.order.Len())
	for v := range l.values {
		out = append(out, v)
	}
	return out
}
