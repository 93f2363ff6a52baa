package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

// Benchmarks of the writer against the real stack (Kafka a, the Postgres
// primary with its streaming standby). They report their figures with
// b.ReportMetric; `make bench` runs them with -benchtime Nx (N records) and
// writes the figures into BENCHMARKS.md.

// BenchmarkWriterThroughput produces a backlog of b.N records (a history of
// 200 chats: posts, edits, deletes, 10% duplicates) on four partitions per
// topic, then starts one writer and measures how fast it commits them all,
// at three batch sizes.
func BenchmarkWriterThroughput(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		b.Run("batch="+strconv.Itoa(size), func(b *testing.B) {
			if stacktest.ProbeRun(b) {
				return
			}
			r := rand.New(rand.NewPCG(rand.Uint64(), 4))
			e := newWriterEnv(b)
			e.cfg.BatchMax, e.cfg.LogLevel = size, "warn"
			h := chatdbtest.NewHistory(r, e.prefix, 200, b.N)
			msgs, chats := h.Arrivals(r, 10)
			msgs = msgs[:min(len(msgs), b.N-len(chats))]
			produce(b, e.producer, e.records(r, msgs, chats))

			b.ResetTimer()
			// From the assignment of the partitions (the group's join is not
			// the writer's speed) to the commit of the last record.
			w := e.startInProcess("writer-1")
			poll(b, "the partitions to be assigned", func() bool { return w.gauge(b, "writer_assigned_partitions") == 2*topicPartitions })
			start := time.Now()
			poll(b, "the backlog to be committed", func() bool { return w.committed(b) >= float64(b.N) })
			took := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/took.Seconds(), "records/s")
			b.ReportMetric(0, "ns/op")
			b.Logf("%d records in %s at batch size %d", b.N, took.Round(time.Millisecond), size)
		})
	}
}

// poll checks cond every 5 ms until it holds, and fails the benchmark if
// it does not within 10 minutes. (stacktest.WaitFor's 100 ms would blur a
// run of a few seconds.)
func poll(b *testing.B, what string, cond func() bool) {
	b.Helper()
	for end := time.Now().Add(10 * time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			b.Fatalf("waited 10m for %s", what)
		}
	}
}

// committed returns how many records the writer has committed, written or
// stale.
func (p *inProcess) committed(t testing.TB) float64 {
	sum := 0.0
	for _, k := range []change.Kind{change.KindMessage, change.KindChat} {
		sum += p.counter(t, k, outcomeWritten) + p.counter(t, k, outcomeStale)
	}
	return sum
}

// BenchmarkWriterLatency produces b.N message records at 200/s, one at a
// time, into a running writer with the default batching (up to 1,000
// records, 5 ms linger), and measures each from just before its produce
// call to the commit of its row, as Postgres reports it: a trigger in the
// benchmark's database notifies at commit, and a listener takes the time.
func BenchmarkWriterLatency(b *testing.B) {
	if stacktest.ProbeRun(b) {
		return
	}
	r := rand.New(rand.NewPCG(rand.Uint64(), 5))
	e := newWriterEnv(b)
	e.cfg.LogLevel = "warn"
	ctx := context.Background()
	listener, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer listener.Close(ctx)
	for _, sql := range []string{
		`CREATE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bench_committed', NEW.id || ' ' || NEW.version); RETURN NULL; END $$`,
		`CREATE TRIGGER bench_committed AFTER INSERT OR UPDATE ON messages FOR EACH ROW EXECUTE FUNCTION bench_notify()`,
		`LISTEN bench_committed`,
	} {
		if _, err := listener.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	w := e.startInProcess("writer-1")
	poll(b, "the partitions to be assigned", func() bool { return w.gauge(b, "writer_assigned_partitions") == 2*topicPartitions })

	h := chatdbtest.NewHistory(r, e.prefix, 20, b.N*2)
	msgs := h.Messages[:min(len(h.Messages), b.N)]
	recs := e.records(r, msgs, nil)
	var mu sync.Mutex
	sent := make(map[string]time.Time, len(msgs))
	committed := make(map[string]time.Time, len(msgs))
	listenCtx, stopListening := context.WithCancel(ctx)
	listened := make(chan struct{})
	go func() {
		defer close(listened)
		for {
			n, err := listener.WaitForNotification(listenCtx)
			if err != nil {
				return
			}
			at := time.Now()
			mu.Lock()
			if _, ok := committed[n.Payload]; !ok {
				committed[n.Payload] = at
			}
			mu.Unlock()
		}
	}()

	b.ResetTimer()
	tick := time.NewTicker(5 * time.Millisecond) // 200 records/s
	for i := range recs {
		<-tick.C
		mu.Lock()
		sent[msgs[i].ID+" "+strconv.FormatInt(msgs[i].Version, 10)] = time.Now()
		mu.Unlock()
		if err := stacktest.Produce(e.producer, recs[i:i+1], 1, 0); err != nil {
			b.Fatal(err)
		}
	}
	tick.Stop()
	stacktest.WaitFor(b, time.Minute, "every record's commit", func() error {
		mu.Lock()
		defer mu.Unlock()
		missing := 0
		for k := range sent {
			if _, ok := committed[k]; !ok && !superseded(k, msgs) {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d records not committed yet", missing)
		}
		return nil
	})
	b.StopTimer()
	stopListening()
	<-listened

	var ds []time.Duration
	for k, at := range sent {
		if c, ok := committed[k]; ok {
			ds = append(ds, c.Sub(at))
		}
	}
	stacktest.ReportDurations(b, "e2e", time.Millisecond, ds)
	b.ReportMetric(0, "ns/op")
}

// superseded reports whether the record named key ("id version") was
// never going to be written because a newer version of its message came in
// the same batch: last writer wins inside a batch too.
func superseded(key string, msgs []change.Message) bool {
	id, v, _ := strings.Cut(key, " ")
	version, _ := strconv.ParseInt(v, 10, 64)
	for _, m := range msgs {
		if m.ID == id && m.Version > version {
			return true
		}
	}
	return false
}
