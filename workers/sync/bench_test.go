package main

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/workflows"
)

// Benchmarks of the sync against the real stack. They report their figures
// with b.ReportMetric; `make bench` runs them (-benchtime sets the number of
// kills, changes or backlog) and writes the figures into BENCHMARKS.md.

// BenchmarkSyncFailoverGap kills -9 the worker running the sync activity b.N
// times (three replicas over two regions, 200 changes/s) and measures the
// failover gap: from the kill to the next change published by another
// attempt, as seen by a read_committed consumer. Each kill comes at a random
// moment 0.2-2.2 s into an attempt.
func BenchmarkSyncFailoverGap(b *testing.B) {
	e := newSyncEnv(b)
	traces := e.traces()
	e.startWorkers(threeWorkers)
	ctx, stopStorm := context.WithCancel(context.Background())
	defer stopStorm()
	wait := e.storm(ctx, loadgen.Config{Rate: 200, Duration: time.Hour, Chats: 30})

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var (
		gaps []time.Duration
		last string
	)
	b.ResetTimer()
	for range b.N {
		_, attempt, killedAt := e.killActive(last, rng, threeWorkers)
		var next time.Time
		stacktest.WaitFor(b, time.Minute, "a change published after the kill", func() error {
			next = firstSeenAfter(traces, killedAt, attempt)
			if next.IsZero() {
				return errors.New("none yet")
			}
			return nil
		})
		gaps = append(gaps, next.Sub(killedAt))
		last = attempt
	}
	b.StopTimer()
	stopStorm()
	acked := wait()
	recs := e.verify(acked, traces)
	stacktest.ReportDurations(b, "gap", time.Second, gaps)
	b.ReportMetric(float64(duplicates(recs))/float64(b.N), "dups/failover")
	b.ReportMetric(float64(len(missing(acked, recs))), "lost")
}

// firstSeenAfter returns when the first record published by an attempt
// other than attempt was seen after t, or the zero time.
func firstSeenAfter(traces []*trace, t time.Time, attempt string) time.Time {
	var first time.Time
	for _, tr := range traces {
		tr.mu.Lock()
		for _, r := range tr.recs {
			if r.attempt != attempt && r.seenAt.After(t) && (first.IsZero() || r.seenAt.Before(first)) {
				first = r.seenAt
			}
		}
		tr.mu.Unlock()
	}
	return first
}

// BenchmarkSyncLatency drives b.N writes at 200/s through one sync worker and
// reports the worker's poll-to-Kafka-acknowledgement latency (from its
// sync_produce_seconds histogram) and the end-to-end latency from external's
// commit (the change's updatedAt) to a read_committed consumer seeing it.
func BenchmarkSyncLatency(b *testing.B) {
	if stacktest.ProbeRun(b) {
		return
	}
	e := newSyncEnv(b)
	traces := e.traces()
	e.startWorkers(oneWorker)
	b.ResetTimer()
	acked := e.storm(context.Background(), loadgen.Config{Rate: 200, MaxOps: b.N, Chats: 20})()
	recs := e.verify(acked, traces)
	b.StopTimer()

	type key struct {
		id string
		v  int64
	}
	seen := map[key]time.Time{}
	for _, r := range recs {
		k := key{r.id, r.version}
		if t, ok := seen[k]; !ok || r.seenAt.Before(t) {
			seen[k] = r.seenAt
		}
	}
	var e2e []time.Duration
	for _, a := range acked {
		if a.Op != loadgen.OpMessageCreated && a.Op != loadgen.OpMessageUpdated {
			continue
		}
		if t, ok := seen[key{a.MessageID, a.Version}]; ok && !a.ServerAt.IsZero() {
			e2e = append(e2e, t.Sub(a.ServerAt))
		}
	}
	stacktest.ReportDurations(b, "e2e", time.Millisecond, e2e)
	buckets := scrapeHistogram(b, e.metrics["w1"]+"/metrics", "sync_produce_seconds")
	b.ReportMetric(histogramQuantile(0.5, buckets)*1000, "produce-p50-ms")
	b.ReportMetric(histogramQuantile(0.99, buckets)*1000, "produce-p99-ms")
}

// BenchmarkSyncThroughput pauses the sync, lets a backlog of b.N writes
// build up in external, resumes it and measures how fast the backlog reaches
// Kafka (external → Kafka, with the whole geo stack running).
func BenchmarkSyncThroughput(b *testing.B) {
	if stacktest.ProbeRun(b) {
		return
	}
	e := newSyncEnv(b)
	traces := e.traces()
	e.startWorkers(oneWorker)
	ctx := context.Background()
	if err := e.tc.SignalWorkflow(ctx, workflows.WorkflowID, "", workflows.SignalPause, nil); err != nil {
		b.Fatal(err)
	}
	stacktest.WaitFor(b, time.Minute, "the sync to pause", func() error {
		if _, err := e.activeWorker(ctx); err == nil {
			return errors.New("an activity still runs")
		}
		return nil
	})
	acked := e.storm(ctx, loadgen.Config{Rate: 100_000, MaxOps: b.N, Chats: 200, Concurrency: 32})()
	b.ResetTimer()
	start := time.Now()
	if err := e.tc.SignalWorkflow(ctx, workflows.WorkflowID, "", workflows.SignalResume, nil); err != nil {
		b.Fatal(err)
	}
	recs := e.verify(acked, traces)
	b.StopTimer()
	var end time.Time
	for _, r := range recs {
		if r.seenAt.After(end) {
			end = r.seenAt
		}
	}
	b.ReportMetric(float64(len(recs))/end.Sub(start).Seconds(), "changes/s")
	b.ReportMetric(float64(len(recs)), "changes")
	poll := scrapeHistogram(b, e.metrics["w1"]+"/metrics", "sync_poll_seconds")
	produce := scrapeHistogram(b, e.metrics["w1"]+"/metrics", "sync_produce_seconds")
	b.Logf("per page: poll p50 %.1f ms, produce p50 %.1f ms", histogramQuantile(0.5, poll)*1000, histogramQuantile(0.5, produce)*1000)
}

type bucket struct {
	le    float64
	count float64
}

// scrapeHistogram reads a Prometheus histogram's cumulative buckets, the
// +Inf bucket last.
func scrapeHistogram(b *testing.B, url, name string) []bucket {
	b.Helper()
	mf, ok := scrapeMetrics(b, url)[name]
	if !ok || len(mf.GetMetric()) == 0 || mf.GetMetric()[0].GetHistogram() == nil {
		b.Fatalf("no %s histogram at %s", name, url)
	}
	h := mf.GetMetric()[0].GetHistogram()
	var out []bucket
	for _, bk := range h.GetBucket() {
		out = append(out, bucket{bk.GetUpperBound(), float64(bk.GetCumulativeCount())})
	}
	return append(out, bucket{math.Inf(1), float64(h.GetSampleCount())})
}

// histogramQuantile interpolates quantile q linearly within its bucket, as
// Prometheus's histogram_quantile does.
func histogramQuantile(q float64, bs []bucket) float64 {
	total := bs[len(bs)-1].count
	rank := q * total
	prevLe, prevCount := 0.0, 0.0
	for _, bk := range bs {
		if bk.count >= rank {
			if math.IsInf(bk.le, 1) {
				return prevLe
			}
			if bk.count == prevCount {
				return bk.le
			}
			return prevLe + (bk.le-prevLe)*(rank-prevCount)/(bk.count-prevCount)
		}
		prevLe, prevCount = bk.le, bk.count
	}
	return prevLe
}
