package main

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatpoc/chat-poc/apps/internal/cache"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
)

// internalBin is the internal app's command, built for the benchmark that
// runs it as a process of its own (to measure its memory alone).
var internalBin string

func TestMain(m *testing.M) { stacktest.MainWithCommand(m, ".", "internal", &internalBin) }

// Fan-out benchmark shape, as the issue sets it.
const (
	fanoutClients = 1000
	fanoutChats   = 100
	fanoutRate    = 200 // changes/s
)

// BenchmarkInternalFanout runs one internal app process with 1,000
// WebSocket clients subscribed across 100 chats (10 each), produces b.N
// message changes at 200/s round-robin over the chats, and measures each
// change from just before its produce call to each subscriber's receipt of
// its update frame; and the app's memory (Go heap and stacks in use) per
// connection.
func BenchmarkInternalFanout(b *testing.B) {
	if stacktest.ProbeRun(b) {
		return
	}
	e := configureEnv(b, nil)
	ps := stacktest.NewProcs(b, internalBin)
	e.startProcess(ps)
	e.waitConsuming()
	metrics := e.url + "/metrics"
	before := inUse(b, metrics)

	var (
		mu       sync.Mutex
		sent     = make(map[string]time.Time, b.N)
		lat      = make([]time.Duration, 0, b.N*fanoutClients/fanoutChats)
		received int
	)
	clients := make([]*wsConn, fanoutClients)
	for i := range clients {
		c := e.dial()
		c.send(`{"type":"sub","id":"` + fmt.Sprintf("%s-c%d", e.prefix, i%fanoutChats) + `"}`)
		c.next() // error: unknown chat (subscribed)
		clients[i] = c
	}
	after := inUse(b, metrics)
	b.Logf("app heap+stack in use: %.1f MiB before, %.1f MiB with %d clients", before/(1<<20), after/(1<<20), fanoutClients)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for {
				f, err := c.read(ctx)
				if err != nil {
					return
				}
				at := time.Now()
				if f.Type != "update" || len(f.Messages) != 1 {
					continue
				}
				mu.Lock()
				lat = append(lat, at.Sub(sent[f.Messages[0].ID]))
				received++
				mu.Unlock()
			}
		})
	}

	b.ResetTimer()
	tick := time.NewTicker(time.Second / fanoutRate)
	for i := range b.N {
		<-tick.C
		m := msg(fmt.Sprintf("%s-c%d", e.prefix, i%fanoutChats), "m"+strconv.Itoa(i), int64(i+1), int64(i+1), "fan-out")
		mu.Lock()
		sent[m.ID] = time.Now()
		mu.Unlock()
		e.produceMessages(m)
	}
	tick.Stop()
	want := b.N * fanoutClients / fanoutChats
	stacktest.WaitFor(b, time.Minute, "every subscriber's updates", func() error {
		mu.Lock()
		defer mu.Unlock()
		if received < want {
			return fmt.Errorf("%d of %d updates received", received, want)
		}
		return nil
	})
	b.StopTimer()
	cancel()
	for _, c := range clients {
		c.conn.CloseNow()
	}
	wg.Wait()
	stacktest.ReportDurations(b, "fanout", time.Millisecond, lat)
	b.ReportMetric((after-before)/fanoutClients/1024, "KiB/conn")
	b.ReportMetric(0, "ns/op")
}

// inUse returns the app's Go heap and stacks in use, from its /metrics.
func inUse(b *testing.B, url string) float64 {
	b.Helper()
	mfs, err := stacktest.ScrapeMetrics(url)
	if err != nil {
		b.Fatal(err)
	}
	sum := 0.0
	for _, name := range []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes"} {
		mf, ok := mfs[name]
		if !ok || len(mf.GetMetric()) != 1 {
			b.Fatalf("no %s at %s", name, url)
		}
		sum += mf.GetMetric()[0].GetGauge().GetValue()
	}
	return sum
}

// BenchmarkInternalOpenChat runs one internal app process (as
// BenchmarkInternalFanout) with a chat of 100,000 stored messages and one of
// 10, and opens each b.N times in turn, each time on a new WebSocket
// connection: the time from the sub frame's write to the first frame's
// receipt, its load (the newest page of 200, read from one range of the
// index and merged with the cache). The two should be alike: a chat's load
// never reads the whole chat.
func BenchmarkInternalOpenChat(b *testing.B) {
	if stacktest.ProbeRun(b) {
		return
	}
	e := configureEnv(b, func(c *Config) { c.WSRequestRate = 0 })
	ps := stacktest.NewProcs(b, internalBin)
	e.startProcess(ps)
	big, small := e.prefix+"-big", e.prefix+"-small"
	e.insertMessages(big, 100_000)
	e.insertMessages(small, 10)

	open := func(chat string) time.Duration {
		c := e.dial()
		defer c.conn.CloseNow()
		start := time.Now()
		c.send(`{"type":"sub","id":"` + chat + `"}`)
		f := c.next()
		d := time.Since(start)
		if f.Type != "load" || f.ChatID != chat || len(f.Messages) == 0 {
			b.Fatalf("opening %s: %s frame of %d messages, want its load", chat, f.Type, len(f.Messages))
		}
		return d
	}
	open(big) // warm: the first connection of the pool, the page's plan
	open(small)
	bigLat, smallLat := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		bigLat = append(bigLat, open(big))
		smallLat = append(smallLat, open(small))
	}
	b.StopTimer()
	stacktest.ReportDurations(b, "open-100k", time.Millisecond, bigLat)
	stacktest.ReportDurations(b, "open-10", time.Millisecond, smallLat)
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCacheCAS runs the updateByTimestamp script against the stack's
// Redis from 16×GOMAXPROCS goroutines: b.N puts of new versions over 1,000
// messages.
func BenchmarkCacheCAS(b *testing.B) {
	rdb := redis.NewClient(&redis.Options{Addr: stacktest.Env(b, stacktest.Connect(b), devstack.EnvRedisAddr), PoolSize: 64})
	b.Cleanup(func() { rdb.Close() })
	c := cache.New(rdb, time.Hour, "bench")
	chat := stacktest.UniqueName("cas")
	var next atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			v := next.Add(1)
			m := change.Message{ID: "m" + strconv.FormatInt(v%1000, 10), ChatID: chat, Content: strings.Repeat("x", 100),
				CreatedAt: time.Unix(0, 0).UTC(), UpdatedAt: time.Unix(v, 0).UTC(), Version: v}
			if _, err := c.PutMessage(context.Background(), m); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "scripts/s")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d puts from %d goroutines", b.N, 16*runtime.GOMAXPROCS(0))
}
