package kafkaclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/kafkaclient"
)

// progressEnv is a consumer of one fresh topic on the stack's cluster a
// and a Progress watching it.
type progressEnv struct {
	t         *testing.T
	bootstrap string
	topic     string
	producer  *kafka.Producer
	consumer  *kafka.Consumer
	progress  *kafkaclient.Progress
}

func newProgressEnv(t *testing.T, partitions int, opts kafkaclient.ProgressOptions) *progressEnv {
	t.Helper()
	stack := stacktest.Connect(t)
	e := &progressEnv{t: t, bootstrap: stacktest.Env(t, stack, devstack.EnvKafkaABootstrap), topic: stacktest.UniqueName("progress")}
	stacktest.CreateTopics(t, e.bootstrap, partitions, e.topic)
	e.producer = stacktest.NewProducer(t, e.bootstrap)
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers": e.bootstrap, "group.id": e.topic, "isolation.level": "read_committed",
		"auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kafkaclient.CloseConsumer(c, 10*time.Second) })
	e.consumer = c
	opts.Bootstrap, opts.ClientID = e.bootstrap, e.topic+"-watchdog"
	if opts.Match == nil {
		opts.Match = func(topic string) bool { return topic == e.topic }
	}
	e.progress, err = kafkaclient.NewProgress(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.progress.Close)
	return e
}

func (e *progressEnv) produce(topic string, n int) {
	e.t.Helper()
	recs := make([]stacktest.Record, n)
	for i := range recs {
		recs[i] = stacktest.Record{Topic: topic, Key: fmt.Sprint(i), Value: []byte("v")}
	}
	if err := stacktest.Produce(e.producer, recs, n, 0); err != nil {
		e.t.Fatal(err)
	}
}

// consume polls until n records were read.
func (e *progressEnv) consume(n int) {
	e.t.Helper()
	got := 0
	stacktest.WaitFor(e.t, time.Minute, fmt.Sprintf("%d records consumed", n), func() error {
		for range 50 {
			if m, ok := e.consumer.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
				got++
			}
			if got >= n {
				return nil
			}
		}
		return fmt.Errorf("%d so far", got)
	})
}

// probe runs the probe once.
func (e *progressEnv) probe() (time.Duration, string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stalled, what, err := e.progress.Probe(ctx)
	if err != nil {
		e.t.Fatalf("probe: %v", err)
	}
	return stalled, what
}

// waitStalled probes, polling the consumer without letting it fetch (its
// partitions are paused, or not its own), until the probe reports a stall
// of at least d naming want.
func (e *progressEnv) waitStalled(d time.Duration, want string) {
	e.t.Helper()
	stacktest.WaitFor(e.t, time.Minute, fmt.Sprintf("a stall of %s on %s", d, want), func() error {
		e.consumer.Poll(100)
		stalled, what := e.probe()
		if stalled < d || !strings.Contains(what, want) {
			return fmt.Errorf("stalled %s (%q)", stalled, what)
		}
		return nil
	})
}

func TestProgressSeesAPausedConsumerStall(t *testing.T) {
	t.Parallel()
	e := newProgressEnv(t, 2, kafkaclient.ProgressOptions{All: true})
	if err := e.consumer.Subscribe(e.topic, nil); err != nil {
		t.Fatal(err)
	}
	e.produce(e.topic, 20)
	e.consume(20)
	// Caught up: nothing waits, however long the probe watches.
	for range 3 {
		if stalled, what := e.probe(); stalled != 0 {
			t.Fatalf("caught-up consumer reported stalled %s (%s)", stalled, what)
		}
	}

	// Its fetches stop (as a wedged client's would) while records arrive.
	assigned, err := e.consumer.Assignment()
	if err != nil || len(assigned) != 2 {
		t.Fatalf("assignment %v, %v: want both partitions", assigned, err)
	}
	if err := e.consumer.Pause(assigned); err != nil {
		t.Fatal(err)
	}
	e.produce(e.topic, 20)
	e.waitStalled(time.Second, e.topic+"[")
	_, what := e.probe()
	if !strings.Contains(what, "committed end") {
		t.Errorf("what waits: %q, want the partition's position and committed end", what)
	}

	// Fetching again: the stall ends as soon as the position moves.
	if err := e.consumer.Resume(assigned); err != nil {
		t.Fatal(err)
	}
	e.consume(20)
	if stalled, what := e.probe(); stalled != 0 {
		t.Errorf("consumer caught up again, probe says stalled %s (%s)", stalled, what)
	}
}

func TestProgressSeesUnassignedPartitionsOfAGroupOfOne(t *testing.T) {
	t.Parallel()
	// The consumer never joins (as after a fatal error): with All, records
	// on its topics are waiting for it; without All, it owns nothing.
	e := newProgressEnv(t, 1, kafkaclient.ProgressOptions{All: true})
	e.probe() // first sight: what is there is history
	e.produce(e.topic, 5)
	e.waitStalled(time.Second, "not assigned to this consumer")

	other := newProgressEnv(t, 1, kafkaclient.ProgressOptions{})
	other.probe()
	other.produce(other.topic, 5)
	// An observation window (the stall above took about this long to show).
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if stalled, what := other.probe(); stalled != 0 {
			t.Fatalf("consumer of a shared group reported a stall on partitions it does not own: %s (%s)", stalled, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestProgressMeasuresDurableOffsetsWhenGiven(t *testing.T) {
	t.Parallel()
	// A writer reads records it cannot commit (Postgres is down): its
	// consumer's position moves, its durable offset does not.
	var durable map[kafkaclient.Partition]int64
	e := newProgressEnv(t, 1, kafkaclient.ProgressOptions{Durable: func() map[kafkaclient.Partition]int64 { return durable }})
	if err := e.consumer.Subscribe(e.topic, nil); err != nil {
		t.Fatal(err)
	}
	e.produce(e.topic, 10)
	e.consume(10)
	durable = map[kafkaclient.Partition]int64{{Topic: e.topic, Partition: 0}: 0}
	e.waitStalled(time.Second, "position 0")
	durable = nil
	if stalled, what := e.probe(); stalled != 0 {
		t.Errorf("durable again, probe says stalled %s (%s)", stalled, what)
	}
}

func TestOutageIsLoggedOnceEachWay(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "down"})
	o := kafkaclient.NewOutage(slog.New(slog.NewTextHandler(&logs, nil)), gauge)
	down := kafka.NewError(kafka.ErrAllBrokersDown, "1/1 brokers are down", false)
	for range 30 { // librdkafka's rate during an outage: several a second
		o.ClientError(down)
	}
	o.ClientError(kafka.NewError(kafka.ErrTransport, "connection refused", false))
	if !o.Down() {
		t.Fatal("not down after all brokers down")
	}
	o.Reachable()
	o.Reachable()
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "Kafka unreachable") || !strings.Contains(lines[1], "Kafka reachable again") || !strings.Contains(lines[1], "after=") {
		t.Fatalf("logged:\n%s\nwant one line down, one line back with how long", logs.String())
	}
	if o.Down() {
		t.Error("still down after Reachable")
	}
}

func TestFencedStaticMemberFailsFatallyAndClosesWithinBound(t *testing.T) {
	t.Parallel()
	stack := stacktest.Connect(t)
	bootstrap := stacktest.Env(t, stack, devstack.EnvKafkaABootstrap)
	topic := stacktest.UniqueName("fenced")
	stacktest.CreateTopics(t, bootstrap, 1, topic)
	newStatic := func() *kafka.Consumer {
		c, err := kafka.NewConsumer(&kafka.ConfigMap{
			"bootstrap.servers": bootstrap, "group.id": topic, "group.instance.id": topic,
			"session.timeout.ms": 10000, "log_level": 0,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Subscribe(topic, nil); err != nil {
			t.Fatal(err)
		}
		return c
	}
	joined := func(c *kafka.Consumer) error {
		c.Poll(100)
		if a, err := c.Assignment(); err != nil || len(a) == 0 {
			return fmt.Errorf("assignment %v, %v", a, err)
		}
		return nil
	}
	first := newStatic()
	stacktest.WaitFor(t, time.Minute, "the first static member to join", func() error { return joined(first) })
	second := newStatic() // the same group.instance.id: the broker fences the first
	t.Cleanup(func() { kafkaclient.CloseConsumer(second, 10*time.Second) })
	stacktest.WaitFor(t, time.Minute, "the second static member to join", func() error { return joined(second) })

	var fatal kafka.Error
	stacktest.WaitFor(t, time.Minute, "the first member's fatal error", func() error {
		for range 10 {
			if e, ok := first.Poll(100).(kafka.Error); ok && e.IsFatal() {
				fatal = e
				return nil
			}
		}
		return errors.New("none yet")
	})
	t.Logf("fenced member's error: %v", fatal)
	if !strings.Contains(fatal.Error(), "fenced") {
		t.Errorf("fatal error %q does not say the member was fenced", fatal)
	}

	// confluent-kafka-go v2.11.1's Close never returns here; the bounded
	// close does.
	began := time.Now()
	finished := kafkaclient.CloseConsumer(first, 2*time.Second)
	if took := time.Since(began); took > 4*time.Second {
		t.Errorf("CloseConsumer took %s, bound 2s", took)
	}
	t.Logf("the fenced consumer's Close finished within the bound: %v", finished)
}

// A consumer whose loop stopped polling is stalled since its last poll,
// even with nothing waiting on its partitions; one that polls is not.
func TestProgressSeesALoopThatStoppedPolling(t *testing.T) {
	t.Parallel()
	var last time.Time
	e := newProgressEnv(t, 1, kafkaclient.ProgressOptions{All: true, Polled: func() time.Time { return last }})
	if err := e.consumer.Subscribe(e.topic, nil); err != nil {
		t.Fatal(err)
	}
	e.produce(e.topic, 3)
	e.consume(3)

	last = time.Now()
	if stalled, what := e.probe(); stalled != 0 {
		t.Fatalf("a loop that just polled reported stalled %s (%s)", stalled, what)
	}
	last = time.Now().Add(-time.Minute)
	stalled, what := e.probe()
	if stalled < time.Minute || !strings.Contains(what, "has not polled") {
		t.Fatalf("a loop silent for a minute: stalled %s (%q), want >= 1m and what says it has not polled", stalled, what)
	}
}

// A partition the consumer has read nothing from, whose end moves only by
// transaction markers (its producer's transactions aborted, as when the
// sync fails over to the other cluster), is not stalled: no record will
// ever come there, and librdkafka moves the position past the markers.
func TestProgressIgnoresAbortedTransactions(t *testing.T) {
	t.Parallel()
	e := newProgressEnv(t, 1, kafkaclient.ProgressOptions{All: true})
	if err := e.consumer.Subscribe(e.topic, nil); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, time.Minute, "the partition assigned", func() error {
		e.consumer.Poll(100)
		if a, err := e.consumer.Assignment(); err != nil || len(a) == 0 {
			return fmt.Errorf("assignment %v, %v", a, err)
		}
		return nil
	})
	e.probe() // the end before the transaction

	tp, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": e.bootstrap, "transactional.id": e.topic + "-tx"})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tp.InitTransactions(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tp.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := tp.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &e.topic, Partition: 0}, Value: []byte("aborted")}, nil); err != nil {
		t.Fatal(err)
	}
	tp.Flush(10_000)
	if err := tp.AbortTransaction(ctx); err != nil {
		t.Fatal(err)
	}

	// Well past a probe interval, nothing is stalled.
	var stalled time.Duration
	var what string
	for until := time.Now().Add(4 * time.Second); time.Now().Before(until); {
		if m, ok := e.consumer.Poll(100).(*kafka.Message); ok {
			t.Fatalf("read an aborted record: %v", m)
		}
		stalled, what = e.probe()
	}
	if stalled != 0 {
		t.Fatalf("stalled %s (%s) with only aborted records waiting", stalled, what)
	}
}
