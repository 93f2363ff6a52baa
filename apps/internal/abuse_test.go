package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
)

// memoryBound is the most resident memory the abuse test lets the app use:
// its memory limit on Kubernetes (deploy/k8s/base/internal.yaml).
const memoryBound = 256 << 20

// metricValue reads a counter's or gauge's value (without labels) from the
// app's /metrics.
func (e *appEnv) metricValue(name string) float64 {
	e.t.Helper()
	mfs, err := stacktest.ScrapeMetrics(e.url + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	mf, ok := mfs[name]
	if !ok || len(mf.GetMetric()) != 1 {
		e.t.Fatalf("no %s at %s/metrics", name, e.url)
	}
	m := mf.GetMetric()[0]
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestAbuseStaysWithinMemoryAndServesOthers runs the app as a process of
// its own (its memory alone is measured), with a cap of 1,000 connections
// and 10 subs/pages per second per connection, on a chat of 100,000 stored
// messages, and abuses it in turn: 100 clients open the big chat (each
// load is its newest 200 messages and says older ones exist); one client
// sends 10,000 subs without reading (rate-limited, then its writes time
// out and it is dropped as too slow, each counted); 2,000
// connections from one origin (beyond the cap 503 with Retry-After,
// counted, the accepted ones within the cap). After each, a client
// subscribed to another chat still gets that chat's next update, and the
// app's resident memory is within memoryBound.
func TestAbuseStaysWithinMemoryAndServesOthers(t *testing.T) {
	const maxClients = 1000
	e := configureEnv(t, func(c *Config) { c.WSMaxClients = maxClients; c.WSRequestRate = 10; c.PageSize = 200 })
	ps := stacktest.NewProcs(t, internalBin)
	e.startProcess(ps)
	e.waitConsuming()
	big := e.prefix + "-big"
	start := time.Now()
	e.insertMessages(big, 100_000)
	t.Logf("100,000 messages stored in %v", time.Since(start).Round(time.Millisecond))

	// The watcher, subscribed to a chat of its own.
	watched := e.prefix + "-w"
	w := e.dial()
	w.send(`{"type":"sub","id":"` + watched + `"}`)
	w.next() // error: unknown chat (subscribed)
	updates := w.frames()
	var version int64
	checkWatcher := func(phase string) {
		t.Helper()
		version++
		e.produceMessages(msg(watched, "w1", 1, version, phase))
		deadline := time.After(frameTimeout)
		for {
			select {
			case f, ok := <-updates:
				if !ok {
					t.Fatalf("%s: the watcher's connection closed", phase)
				}
				if f.Type == "update" && len(f.Messages) == 1 && f.Messages[0].Version == version {
					return
				}
			case <-deadline:
				t.Fatalf("%s: the watcher got no update within %v", phase, frameTimeout)
			}
		}
	}
	checkMemory := func(phase string) {
		t.Helper()
		rss, heap := e.metricValue("process_resident_memory_bytes"), e.metricValue("go_memstats_heap_inuse_bytes")
		t.Logf("%s: app RSS %.1f MiB, heap in use %.1f MiB", phase, rss/(1<<20), heap/(1<<20))
		if rss > memoryBound {
			t.Errorf("%s: app RSS %.1f MiB, above the bound of %d MiB", phase, rss/(1<<20), memoryBound>>20)
		}
	}
	checkWatcher("idle")
	checkMemory("idle")

	// 100 clients open the 100,000-message chat.
	openers := make([]*wsConn, 100)
	for i := range openers {
		openers[i] = e.dial()
		openers[i].send(`{"type":"sub","id":"` + big + `"}`)
	}
	for i, c := range openers {
		if f := c.nextOf(big); f.Type != "load" || len(f.Messages) != 200 || !f.HasMore ||
			f.Messages[199].ID != big+"-m99999" {
			t.Fatalf("client %d: %s of %d messages (hasMore %v); want a load of the newest 200 and hasMore", i, f.Type, len(f.Messages), f.HasMore)
		}
	}
	checkWatcher("100 clients opened the big chat")
	checkMemory("100 clients opened the big chat")

	// One client sends 10,000 subs and reads nothing.
	flood := e.dial()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub := []byte(`{"type":"sub","id":"` + big + `"}`)
	sent := 0
	for range 10_000 {
		if err := flood.conn.Write(ctx, websocket.MessageText, sub); err != nil {
			break // closed as too slow: fine too
		}
		sent++
	}
	// Its first 100 subs are served (the burst), later ones at 10 a second
	// and the rest refused with error frames; frames pile up unread, its
	// writer blocks until the write timeout and its queue fills: it is
	// closed as too slow. Each limit hit is counted.
	waitFor(t, "the flooding client to be refused, timed out and dropped", func() error {
		limited, timeouts, dropped := e.metricValue("internal_ws_rate_limited_total"),
			e.metricValue("internal_ws_write_timeouts_total"), e.metricValue("internal_ws_slow_clients_dropped_total")
		if limited < 1 || timeouts < 1 || dropped < 1 {
			return fmt.Errorf("%v subs rate-limited, %v write timeouts, %v slow clients dropped", limited, timeouts, dropped)
		}
		t.Logf("%d subs sent: %v rate-limited, %v write timeouts, %v slow clients dropped", sent, limited, timeouts, dropped)
		return nil
	})
	checkWatcher("a client sent 10,000 subs")
	checkMemory("a client sent 10,000 subs")

	// 2,000 connections from one origin.
	var accepted, refused int
	header := http.Header{"Origin": {e.url}}
	for range 2000 {
		dctx, dcancel := context.WithTimeout(context.Background(), frameTimeout)
		conn, resp, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(e.url, "http")+"/ws", &websocket.DialOptions{HTTPHeader: header})
		dcancel()
		switch {
		case err == nil:
			accepted++
			t.Cleanup(func() { conn.CloseNow() })
		case resp != nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
			refused++
		default:
			t.Fatalf("connection %d: %v", accepted+refused+1, err)
		}
	}
	t.Logf("2,000 connections: %d accepted, %d refused", accepted, refused)
	if open := e.metricValue("internal_ws_clients"); open > maxClients {
		t.Errorf("%v connections open, above the cap of %d", open, maxClients)
	}
	if got := e.metricValue("internal_ws_connections_refused_total"); refused < 2000-maxClients || got != float64(refused) {
		t.Errorf("%d connections refused, %v counted; want at least %d, all counted", refused, got, 2000-maxClients)
	}
	checkWatcher("2,000 more connections")
	checkMemory("2,000 more connections")
}
