package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/e2e/chaostest"
	"github.com/chatpoc/chat-poc/internal/converge"
)

// Benchmarks of the whole geo stack (make bench). They report their figures
// with b.ReportMetric; deploy/cmd/benchmd writes them into BENCHMARKS.md.

// BenchmarkIdleRSS reports the resident memory of each of our services in
// the stack (from /proc/<pid>/status), run first in make bench, before any
// load.
func BenchmarkIdleRSS(b *testing.B) {
	if stacktest.ProbeRun(b) {
		return
	}
	stack := stacktest.Connect(b)
	sts, err := stack.Status(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	ours := map[devstack.Name]bool{
		devstack.External: true, devstack.SyncA1: true, devstack.SyncA2: true, devstack.SyncB1: true,
		devstack.WriterA1: true, devstack.WriterA2: true, devstack.WriterB1: true,
		devstack.InternalA1: true, devstack.InternalB1: true,
	}
	maxMB := 0.0
	for _, s := range sts {
		if !ours[s.Name] || !s.Running {
			continue
		}
		kb, err := devstack.VmRSS(s.Pid)
		if err != nil {
			b.Fatalf("%s: %v", s.Name, err)
		}
		mb := float64(kb) / 1024
		maxMB = max(maxMB, mb)
		b.ReportMetric(mb, string(s.Name)+"-MB")
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(maxMB, "max-MB")
}

// BenchmarkEndToEndLatency measures, at 50, 200 and 1,000 writes/s, the
// latency from external's acknowledgement of a write (the load generator's
// clock) to the first internal UI WebSocket frame carrying it (a client of
// region a's internal app subscribed to every chat, same clock): the whole
// pipeline, external → sync → Kafka → internal → browser. b.N writes per
// rate.
func BenchmarkEndToEndLatency(b *testing.B) {
	for _, rate := range []float64{50, 200, 1000} {
		b.Run(fmt.Sprintf("rate=%g", rate), func(b *testing.B) {
			if stacktest.ProbeRun(b) {
				return
			}
			stack := stacktest.Connect(b)
			rec := chaostest.StartRecorder(b, "internal-a1", stacktest.Env(b, stack, devstack.EnvInternalURL))
			log := &loadgen.MemoryRecorder{}
			stats, err := loadgen.Run(context.Background(), loadgen.Config{
				BaseURL: stacktest.Env(b, stack, devstack.EnvExternalURL), Rate: rate, MaxOps: b.N,
				Chats: 20, Concurrency: 32,
			}, log, nil)
			if err != nil {
				b.Fatal(err)
			}
			pool := stacktest.Pool(b, stacktest.Env(b, stack, devstack.EnvPGInternalDSN), 4)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if _, _, err := converge.Await(ctx, pool, log.Records(), nil, 250*time.Millisecond); err != nil {
				b.Fatal(err)
			}
			r := chaostest.AwaitStreams(b, log.Records(), chaostest.LoadDB(b, pool, log.Records()), []*chaostest.Recorder{rec}, chaostest.DeliveryBound)
			l := r.StreamLatency.All
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(stats.Acked)/stats.Elapsed.Seconds(), "writes/s")
			reportLatency(b, "e2e", l)
			if r.Failed() || l.Count == 0 {
				b.Errorf("rate %g: %d lost, %d stale, %d regressions, %d lost in stream, %d frames measured", rate,
					len(r.Lost), len(r.Stale), len(r.Regressions), len(r.LostInStream), l.Count)
			}
		})
	}
}

// reportLatency reports l's p50, p95, p99 and max in milliseconds, named
// prefix-p50-ms etc.
func reportLatency(b *testing.B, prefix string, l converge.Latency) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(l.P50), prefix+"-p50-ms")
	b.ReportMetric(ms(l.P95), prefix+"-p95-ms")
	b.ReportMetric(ms(l.P99), prefix+"-p99-ms")
	b.ReportMetric(ms(l.Max), prefix+"-max-ms")
}

// BenchmarkSustainedThroughput drives external as hard as the load
// generator can (asking for 2,000 writes/s, 64 in flight) for b.N seconds
// with the whole geo stack running, and reports the rate external
// acknowledged (the saturation point of this machine), the latency from
// acknowledgement to the row written (the Postgres clock), and how long the
// pipeline took to drain after the storm stopped: a pipeline that kept up
// drains in well under a second; one whose lag grew needs the backlog's time.
func BenchmarkSustainedThroughput(b *testing.B) {
	if stacktest.ProbeRun(b) {
		return
	}
	stack := stacktest.Connect(b)
	log := &loadgen.MemoryRecorder{}
	stats, err := loadgen.Run(context.Background(), loadgen.Config{
		BaseURL: stacktest.Env(b, stack, devstack.EnvExternalURL), Rate: 2000,
		Duration: time.Duration(b.N) * time.Second, Chats: 50, Concurrency: 64,
	}, log, nil)
	if err != nil {
		b.Fatal(err)
	}
	pool := stacktest.Pool(b, stacktest.Env(b, stack, devstack.EnvPGInternalDSN), 4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r, drained, err := converge.Await(ctx, pool, log.Records(), nil, 100*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	if !r.Converged() {
		b.Fatalf("not converged 10 minutes after the storm: %d lost, %d stale", len(r.Lost), len(r.Stale))
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(stats.Acked)/stats.Elapsed.Seconds(), "changes/s")
	b.ReportMetric(float64(stats.Failed), "failed")
	b.ReportMetric(drained.Seconds(), "drain-s")
	reportLatency(b, "ack-to-row", r.DBLatency.All)
}

// BenchmarkMirrorMakerLag produces b.N records at 200/s to a fresh topic on
// cluster a and measures when each arrives on cluster b (MirrorMaker 2's
// copy a.<topic>): produce → consumed, one clock.
func BenchmarkMirrorMakerLag(b *testing.B) {
	if stacktest.ProbeRun(b) {
		return
	}
	stack := stacktest.Connect(b)
	a := stacktest.Env(b, stack, devstack.EnvKafkaABootstrap)
	bb := stacktest.Env(b, stack, devstack.EnvKafkaBBootstrap)
	topic := stacktest.UniqueName("mm2-lag")
	stacktest.CreateTopics(b, a, 3, topic)
	producer := stacktest.NewProducer(b, a)
	consumer, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers": bb, "group.id": topic, "auto.offset.reset": "earliest",
		"enable.auto.commit": false, "topic.metadata.refresh.interval.ms": 1000,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer consumer.Close()
	if err := consumer.Subscribe("a."+topic, nil); err != nil {
		b.Fatal(err)
	}
	send := func(i int) {
		v := strconv.FormatInt(time.Now().UnixNano(), 10)
		err := producer.Produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny},
			Key:            []byte(strconv.Itoa(i)), Value: []byte(v),
		}, nil)
		if err != nil {
			b.Fatal(err)
		}
	}
	// MirrorMaker 2 finds new topics every 10 s: wait for a first record.
	send(-1)
	stacktest.WaitFor(b, 2*time.Minute, "MirrorMaker 2 to mirror the new topic", func() error {
		if m, err := consumer.ReadMessage(time.Second); err != nil || m == nil {
			return fmt.Errorf("nothing on b yet: %v", err)
		}
		return nil
	})
	lags := make([]time.Duration, 0, b.N)
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(time.Duration(b.N)*5*time.Millisecond + 2*time.Minute)
		for len(lags) < b.N && time.Now().Before(deadline) {
			m, err := consumer.ReadMessage(time.Second)
			if err != nil {
				continue
			}
			sent, err := strconv.ParseInt(string(m.Value), 10, 64)
			if err != nil {
				continue
			}
			lags = append(lags, time.Since(time.Unix(0, sent)))
		}
	}()
	tick := time.NewTicker(5 * time.Millisecond) // 200/s
	for i := 0; i < b.N; i++ {
		<-tick.C
		send(i)
	}
	tick.Stop()
	<-done
	if len(lags) < b.N {
		b.Fatalf("%d of %d records arrived on b", len(lags), b.N)
	}
	b.ReportMetric(0, "ns/op")
	stacktest.ReportDurations(b, "lag", time.Millisecond, lags)
}
