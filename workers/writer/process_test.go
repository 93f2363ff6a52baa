package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

// writerProc is a writer process and the base URL of its /metrics.
type writerProc struct {
	*stacktest.Proc
	metricsURL string
}

// startProc starts a writer process named name with the env's
// configuration.
func (e *writerEnv) startProc(ps *stacktest.Procs, name string) writerProc {
	e.t.Helper()
	addr := stacktest.FreeAddr(e.t)
	return writerProc{ps.Start(name, e.env(name, addr)...), "http://" + addr + "/metrics"}
}

// metric returns the sum of the series of metric family name, or an error
// while the process does not serve it.
func (p writerProc) metric(name string) (float64, error) {
	mfs, err := stacktest.ScrapeMetrics(p.metricsURL)
	if err != nil {
		return 0, err
	}
	mf, ok := mfs[name]
	if !ok {
		return 0, fmt.Errorf("no metric %s", name)
	}
	sum := 0.0
	for _, m := range mf.GetMetric() {
		sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	return sum, nil
}

// waitMetric waits until metric name of p satisfies ok.
func (p writerProc) waitMetric(t testing.TB, name, want string, ok func(float64) bool) {
	t.Helper()
	stacktest.WaitFor(t, time.Minute, fmt.Sprintf("%s of %s to be %s", name, p.Name, want), func() error {
		v, err := p.metric(name)
		if err == nil && !ok(v) {
			err = fmt.Errorf("%s = %v", name, v)
		}
		return err
	})
}

// TestKillNineMidStreamLosesNothing streams a history's records, shuffled
// with duplicates, into two writer processes of one group and kills one of
// them with SIGKILL at random moments, restarting it each time: partitions
// move between the writers (cooperative rebalancing) and a killed writer's
// uncommitted batch is read again by whoever gets its partitions. The
// database must end up with every change's last version.
func TestKillNineMidStreamLosesNothing(t *testing.T) {
	t.Parallel()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	e := newWriterEnv(t)
	e.cfg.BatchMax = 200
	h := chatdbtest.NewHistory(r, e.prefix, 40, 6000)
	msgs, chats := h.Arrivals(r, 10)
	m := chatdbtest.NewModel()
	m.Apply(chatdb.Batch{Messages: msgs, Chats: chats})
	recs := e.records(r, msgs, chats)

	ps := stacktest.NewProcs(t, writerBin)
	names := []string{"writer-1", "writer-2"}
	for _, n := range names {
		e.startProc(ps, n)
	}

	// The storm: 20 records every 50 ms (400/s), for about 17 s.
	var produced atomic.Bool
	errc := make(chan error, 1)
	go func() {
		defer produced.Store(true)
		errc <- stacktest.Produce(e.producer, recs, 20, 50*time.Millisecond)
	}()
	const kills = 6
	killedMidStream := 0
	for i := range kills {
		time.Sleep(time.Duration(500+r.IntN(1500)) * time.Millisecond) // a random moment, not a readiness wait
		victim := names[r.IntN(len(names))]
		ps.Get(victim).Kill()
		if !produced.Load() {
			killedMidStream++
		}
		t.Logf("kill %d: SIGKILL %s", i+1, victim)
		e.startProc(ps, victim)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if killedMidStream == 0 {
		t.Fatal("every kill came after the stream ended: the test proved nothing")
	}
	t.Logf("%d of %d kills while records were being produced", killedMidStream, kills)
	e.waitConverged(m, convergeDeadline)
	for _, n := range names {
		log, err := os.ReadFile(ps.Get(n).Log)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(string(log), `"msg":"partitions assigned"`); got == 0 {
			t.Errorf("%s was never assigned a partition", n)
		}
	}
}

// TestSIGTERMAppliesTheOpenBatchAndLeaves gives a writer a batch that would
// stay open for an hour, then sends it SIGTERM: it must commit the batch,
// leave the consumer group (not wait for the session to time out) and exit
// with status 0.
func TestSIGTERMAppliesTheOpenBatchAndLeaves(t *testing.T) {
	t.Parallel()
	e := newWriterEnv(t)
	e.cfg.Linger, e.cfg.BatchMax = time.Hour, 100_000
	ps := stacktest.NewProcs(t, writerBin)
	w := e.startProc(ps, "writer-1")
	w.waitMetric(t, "writer_assigned_partitions", "8", func(v float64) bool { return v == 2*topicPartitions })

	r := rand.New(rand.NewPCG(rand.Uint64(), 2))
	h := chatdbtest.NewHistory(r, e.prefix, 3, 50)
	m := chatdbtest.NewModel()
	m.Apply(chatdb.Batch{Messages: h.Messages, Chats: h.Chats})
	produce(t, e.producer, e.records(r, h.Messages, h.Chats))
	w.waitMetric(t, "writer_batch_open_records", "50", func(v float64) bool { return v == 50 })
	if err := m.Diff(context.Background(), e.db, e.prefix); err == nil {
		t.Fatal("the database already holds the batch before SIGTERM")
	}

	if err := w.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := w.Wait(shutdownApplyTimeout + closeTimeout + dlqCloseTimeout) // its bounds on the way out
	if err != nil || code != 0 {
		t.Fatalf("after SIGTERM: exit code %d, %v; want 0", code, err)
	}
	if err := m.Diff(context.Background(), e.db, e.prefix); err != nil {
		t.Fatalf("the open batch was not committed before exit: %v", err)
	}
	admin, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": e.bootstrap})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := admin.DescribeConsumerGroups(ctx, []string{e.cfg.Group})
	if err != nil {
		t.Fatal(err)
	}
	g := res.ConsumerGroupDescriptions[0]
	if g.Error.Code() != kafka.ErrNoError || len(g.Members) != 0 || g.State != kafka.ConsumerGroupStateEmpty {
		t.Fatalf("group %s after the writer exited: state %v, %d members, %v; want empty (the writer left)",
			e.cfg.Group, g.State, len(g.Members), g.Error)
	}
}
