package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/redis/go-redis/v9"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
)

var legacyBin string

func TestMain(m *testing.M) { stacktest.MainWithCommand(m, ".", "legacysync", &legacyBin) }

// The storm both baselines go through: what BenchmarkSyncFailoverGap puts
// our sync through (three replicas, 200 writes/s, a kill -9 at a random
// moment, restarted).
const (
	replicas  = 3
	stormRate = 200
)

// BenchmarkLegacySyncKillStorm runs the original synchronizer's two designs
// (sub-benchmarks lease and all) through b.N kills -9 under a storm of
// external writes, and reports what each cost: changes lost (acknowledged
// by external, never in Kafka), Kafka records per change, and records
// re-sent by the snapshot every (re)start sends.
func BenchmarkLegacySyncKillStorm(b *testing.B) {
	for _, mode := range []string{"lease", "all"} {
		b.Run(mode, func(b *testing.B) {
			if stacktest.ProbeRun(b) {
				return
			}
			killStorm(b, mode)
		})
	}
}

// record is one forwarded record.
type record struct {
	change, source string
	snapshot       bool
}

func killStorm(b *testing.B, mode string) {
	stack := stacktest.Connect(b)
	ext := stacktest.Env(b, stack, devstack.EnvExternalURL)
	bootstrap := stacktest.Env(b, stack, devstack.EnvKafkaABootstrap)
	redisAddr := stacktest.Env(b, stack, devstack.EnvRedisAddr)
	topic := stacktest.UniqueName("legacy-" + mode)
	stacktest.CreateTopics(b, bootstrap, 3, topic)
	leaseKey := topic + "-leader"

	var (
		mu       sync.Mutex
		recs     []record
		lastLive = map[string]time.Time{} // when each replica's last live (not snapshot) record was read
	)
	stopReading := readTopic(b, bootstrap, topic, func(r record) {
		mu.Lock()
		recs = append(recs, r)
		if !r.snapshot {
			lastLive[r.source] = time.Now()
		}
		mu.Unlock()
	})
	// forwardingSince reports whether replica name forwarded a live change
	// after t.
	forwardingSince := func(name string, t time.Time) error {
		mu.Lock()
		defer mu.Unlock()
		if !lastLive[name].After(t) {
			return fmt.Errorf("%s has forwarded nothing since %s", name, t.Format(time.StampMilli))
		}
		return nil
	}

	ps := stacktest.NewProcs(b, legacyBin)
	start := func(name string) {
		ps.Start(name, "LEGACY_MODE="+mode, "EXTERNAL_URL="+ext, "KAFKA_BOOTSTRAP="+bootstrap,
			"LEGACY_TOPIC="+topic, "REDIS_ADDR="+redisAddr, "LEGACY_LEASE_KEY="+leaseKey, "LEGACY_IDENTITY="+name)
	}
	names := make([]string, replicas)
	for i := range names {
		names[i] = fmt.Sprintf("r%d", i+1)
		start(names[i])
	}

	log := &loadgen.MemoryRecorder{}
	ctx, stopStorm := context.WithCancel(context.Background())
	defer stopStorm()
	stormDone := make(chan error, 1)
	go func() {
		_, err := loadgen.Run(ctx, loadgen.Config{BaseURL: ext, Rate: stormRate, Duration: time.Hour, Chats: 10}, log, nil)
		stormDone <- err
	}()
	// Forwarding: every replica (all) or the leader (lease) sends the storm.
	want := replicas
	if mode == "lease" {
		want = 1
	}
	stacktest.WaitFor(b, time.Minute, "the replicas to forward the storm", func() error {
		mu.Lock()
		defer mu.Unlock()
		sources := map[string]bool{}
		for _, r := range recs {
			if !r.snapshot {
				sources[r.source] = true
			}
		}
		if len(sources) < want {
			return fmt.Errorf("%d replicas forwarding", len(sources))
		}
		return nil
	})

	// Changes are counted from here: writes sent before every replica had
	// subscribed were never going to be forwarded by the ones that had not.
	measureFrom := time.Now()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	b.ResetTimer()
	// Each kill hits a replica that forwards (lease: the leader) after the
	// previous one's effects are over: the lease taken again by a live
	// replica that forwards, or the restarted replica forwarding again.
	var lastKill time.Time
	for i := 0; i < b.N; i++ {
		victim := names[rand.N(len(names))]
		if mode == "lease" {
			stacktest.WaitFor(b, time.Minute, "a live replica to hold the lease and forward", func() error {
				holder, err := rdb.Get(context.Background(), leaseKey).Result()
				if err != nil {
					return err
				}
				victim = holder
				return forwardingSince(holder, lastKill)
			})
		} else {
			stacktest.WaitFor(b, time.Minute, "the replica to forward", func() error { return forwardingSince(victim, lastKill) })
		}
		time.Sleep(500*time.Millisecond + rand.N(2*time.Second)) // a random moment
		ps.Get(victim).Kill()
		lastKill = time.Now()
		time.Sleep(time.Second) // its supervisor's restart delay
		start(victim)
	}
	b.StopTimer()

	time.Sleep(2 * time.Second) // the storm's last writes reach the forwarders
	stopStorm()
	if err := <-stormDone; err != nil && !errors.Is(err, context.Canceled) {
		b.Fatal(err)
	}
	for _, n := range names {
		p := ps.Get(n)
		_ = p.Signal(syscall.SIGTERM)
		if _, err := p.Wait(30 * time.Second); err != nil {
			b.Fatalf("stop %s: %v", n, err)
		}
	}
	stopReading()

	var acked []loadgen.Record
	for _, r := range log.Records() {
		if r.SentAt.After(measureFrom) {
			acked = append(acked, r)
		}
	}
	expected := changesOf(acked)
	seen := map[string]int{}
	resent := 0
	for _, r := range recs {
		seen[r.change]++
		if r.snapshot {
			resent++
		}
	}
	var lost []string
	for c := range expected {
		if seen[c] == 0 {
			lost = append(lost, c)
		}
	}
	slices.Sort(lost)
	if len(lost) > 0 {
		b.Logf("%s: lost changes, e.g. %v", mode, lost[:min(5, len(lost))])
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(len(expected)), "changes")
	b.ReportMetric(float64(len(lost)), "lost")
	b.ReportMetric(100*float64(len(lost))/float64(len(expected)), "lost-%")
	b.ReportMetric(float64(len(recs)-resent)/float64(len(expected)), "records/change")
	b.ReportMetric(float64(resent), "resent-records")
	b.Logf("%s: %d kills, %d changes acknowledged, %d lost, %d records (%d re-sent by restarts' snapshots)",
		mode, b.N, len(expected), len(lost), len(recs), resent)
}

// changesOf returns the changes acknowledged writes made, named as the
// forwarder names them.
func changesOf(acked []loadgen.Record) map[string]bool {
	out := map[string]bool{}
	for _, r := range acked {
		switch r.Op {
		case loadgen.OpChatCreated:
			out["chat:"+r.ChatID] = true
		case loadgen.OpChatDeleted:
			out["chat-deleted:"+r.ChatID] = true
		case loadgen.OpMessageCreated, loadgen.OpMessageUpdated:
			out[fmt.Sprintf("msg:%s@%d", r.MessageID, r.Version)] = true
		case loadgen.OpMessageDeleted:
			out["msg-deleted:"+r.MessageID] = true
		}
	}
	return out
}

// readTopic reads topic from its start in a goroutine, passing each record
// to got, until the returned function is called; that function returns
// once every record produced before the call was read.
func readTopic(b *testing.B, bootstrap, topic string, got func(record)) func() {
	b.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers": bootstrap, "group.id": topic + "-reader",
		"auto.offset.reset": "earliest", "enable.auto.commit": false,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Subscribe(topic, nil); err != nil {
		b.Fatal(err)
	}
	var (
		mu   sync.Mutex
		read = map[int32]kafka.Offset{}
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ev := c.Poll(100)
			m, ok := ev.(*kafka.Message)
			if !ok || m.TopicPartition.Error != nil {
				continue
			}
			r := record{change: string(m.Value)}
			for _, h := range m.Headers {
				switch h.Key {
				case "source":
					r.source = string(h.Value)
				case "snapshot":
					r.snapshot = string(h.Value) == "true"
				}
			}
			got(r)
			mu.Lock()
			read[m.TopicPartition.Partition] = m.TopicPartition.Offset + 1
			mu.Unlock()
		}
	}()
	return func() {
		b.Helper()
		parts := stacktest.Partitions(b, c, "a", topic)
		stacktest.WaitFor(b, time.Minute, "the reader to reach the topic's end", func() error {
			mu.Lock()
			defer mu.Unlock()
			for _, tp := range parts {
				_, high, err := c.QueryWatermarkOffsets(topic, tp.Partition, 5000)
				if err != nil {
					return err
				}
				if read[tp.Partition] < kafka.Offset(high) {
					return fmt.Errorf("partition %d read to %d of %d", tp.Partition, read[tp.Partition], high)
				}
			}
			return nil
		})
		close(stop)
		<-done
		c.Close()
	}
}

// BenchmarkLegacySyncLatency measures the push-based baseline's latency,
// comparable to BenchmarkSyncLatency's e2e (external's commit → a consumer
// reads the record): one forwarding replica (mode all), b.N writes at
// 200/s, from each write's server timestamp (updatedAt/createdAt, the
// load generator's record of external's answer) to the consumer reading
// its record.
func BenchmarkLegacySyncLatency(b *testing.B) {
	if stacktest.ProbeRun(b) {
		return
	}
	stack := stacktest.Connect(b)
	ext := stacktest.Env(b, stack, devstack.EnvExternalURL)
	bootstrap := stacktest.Env(b, stack, devstack.EnvKafkaABootstrap)
	topic := stacktest.UniqueName("legacy-latency")
	stacktest.CreateTopics(b, bootstrap, 3, topic)

	var (
		mu      sync.Mutex
		arrived = map[string]time.Time{}
	)
	stopReading := readTopic(b, bootstrap, topic, func(r record) {
		mu.Lock()
		if _, ok := arrived[r.change]; !ok {
			arrived[r.change] = time.Now()
		}
		mu.Unlock()
	})
	ps := stacktest.NewProcs(b, legacyBin)
	ps.Start("r1", "LEGACY_MODE=all", "EXTERNAL_URL="+ext, "KAFKA_BOOTSTRAP="+bootstrap,
		"LEGACY_TOPIC="+topic, "LEGACY_IDENTITY=r1")
	// Forwarding once a write made now shows up.
	probe := &loadgen.MemoryRecorder{}
	stacktest.WaitFor(b, time.Minute, "the replica to forward", func() error {
		if _, err := loadgen.Run(context.Background(), loadgen.Config{BaseURL: ext, Rate: 10, MaxOps: 1, Chats: 1}, probe, nil); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for c := range changesOf(probe.Records()) {
			if _, ok := arrived[c]; ok {
				return nil
			}
		}
		return errors.New("nothing forwarded yet")
	})

	log := &loadgen.MemoryRecorder{}
	if _, err := loadgen.Run(context.Background(), loadgen.Config{BaseURL: ext, Rate: 200, MaxOps: b.N, Chats: 20}, log, nil); err != nil {
		b.Fatal(err)
	}
	stopReading()
	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	for _, r := range log.Records() {
		if (r.Op != loadgen.OpMessageCreated && r.Op != loadgen.OpMessageUpdated) || r.ServerAt.IsZero() {
			continue
		}
		if at, ok := arrived[fmt.Sprintf("msg:%s@%d", r.MessageID, r.Version)]; ok {
			lat = append(lat, at.Sub(r.ServerAt))
		}
	}
	b.ReportMetric(0, "ns/op")
	stacktest.ReportDurations(b, "e2e", time.Millisecond, lat)
}
