package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
	"github.com/chatpoc/chat-poc/internal/logging"
)

// writerBin is the writer command, built once for the tests that run it as
// processes.
var writerBin string

func TestMain(m *testing.M) { stacktest.MainWithCommand(m, ".", "writer", &writerBin) }

// topicPartitions is how many partitions a test's topics have: enough for
// two writers to share them.
const topicPartitions = 4

// writerEnv is one test's writer deployment on the shared stack: a fresh
// database, its own topics (and consumer group) on Kafka cluster a, chat
// IDs of its own.
type writerEnv struct {
	t         testing.TB
	stack     *devstack.Client
	bootstrap string // Kafka cluster a
	dsn       string
	db        *chatdb.DB
	cfg       Config // what the test's writers run with
	prefix    string // of its chat IDs
	producer  *kafka.Producer
}

func newWriterEnv(t testing.TB) *writerEnv {
	t.Helper()
	stack := stacktest.Connect(t)
	dsn, db, _ := chatdbtest.NewDB(t)
	name := stacktest.UniqueName("w")
	e := &writerEnv{
		t: t, stack: stack, bootstrap: stacktest.Env(t, stack, devstack.EnvKafkaABootstrap),
		dsn: dsn, db: db, prefix: name,
	}
	e.cfg = Config{
		PGDSN: dsn, PGMaxConns: 4,
		KafkaBootstrap: e.bootstrap, KafkaCluster: "a",
		Group:        name + "-writer",
		MessageTopic: name + "-messages", ChatTopic: name + "-chats",
		BatchMax: 1000, Linger: 5 * time.Millisecond,
		LogLevel: "debug",
	}
	stacktest.CreateTopics(t, e.bootstrap, topicPartitions, e.cfg.MessageTopic, e.cfg.ChatTopic)
	e.producer = stacktest.NewProducer(t, e.bootstrap)
	return e
}

// env is the writer's configuration as environment variables, for a
// process named identity.
func (e *writerEnv) env(identity, listen string) []string {
	c := e.cfg
	return []string{
		"PG_INTERNAL_DSN=" + c.PGDSN,
		"KAFKA_BOOTSTRAP=" + c.KafkaBootstrap,
		"KAFKA_CLUSTER=" + c.KafkaCluster,
		"WRITER_GROUP=" + c.Group,
		"KAFKA_MESSAGE_TOPIC=" + c.MessageTopic,
		"KAFKA_CHAT_TOPIC=" + c.ChatTopic,
		"WRITER_BATCH_MAX=" + strconv.Itoa(c.BatchMax),
		"WRITER_BATCH_LINGER=" + c.Linger.String(),
		"WRITER_LISTEN_ADDR=" + listen,
		"WRITER_IDENTITY=" + identity,
		"LOG_LEVEL=" + c.LogLevel,
	}
}

// inProcess is a Writer running in the test process.
type inProcess struct {
	reg  *prometheus.Registry
	stop func() error
}

// startInProcess runs a Writer with the env's configuration in the test
// process; it is stopped (as by SIGTERM) when the test ends, if not before.
func (e *writerEnv) startInProcess(identity string) *inProcess {
	e.t.Helper()
	log, err := logging.New("warn", "identity", identity)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := e.cfg
	cfg.Identity = identity
	pool := stacktest.Pool(e.t, cfg.PGDSN, int32(cfg.PGMaxConns))
	dlq, err := newDeadLetters(cfg.KafkaBootstrap, cfg.KafkaCluster, identity, log)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := setup(ctx, cfg, pool, dlq, log); err != nil {
		e.t.Fatal(err)
	}
	consumer, err := newConsumer(cfg, log)
	if err != nil {
		e.t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	w, err := NewWriter(consumer, chatdb.New(pool), dlq, Options{
		Group: cfg.Group, Cluster: cfg.KafkaCluster, MessageTopic: cfg.MessageTopic, ChatTopic: cfg.ChatTopic,
		BatchMax: cfg.BatchMax, Linger: cfg.Linger,
	}, newMetrics(reg), log)
	if err != nil {
		e.t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	var result error
	stopped := false
	p := &inProcess{reg: reg, stop: func() error {
		if !stopped {
			stopped = true
			stop()
			result = <-done
			dlq.close(dlqCloseTimeout, log)
		}
		return result
	}}
	e.t.Cleanup(func() {
		if err := p.stop(); err != nil {
			e.t.Errorf("writer %s: %v", identity, err)
		}
	})
	return p
}

// counter returns the value of the writer_records_total series of kind and
// outcome.
func (p *inProcess) counter(t testing.TB, kd change.Kind, outcome string) float64 {
	t.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return recordsCounter(mfs, kd, outcome)
}

// gauge returns the value of the writer's gauge name.
func (p *inProcess) gauge(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

func recordsCounter(mfs []*dto.MetricFamily, kd change.Kind, outcome string) float64 {
	for _, mf := range mfs {
		if mf.GetName() != "writer_records_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kd.String() && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitConverged waits until the database holds model m's state, and fails
// the test with the differences if it does not within deadline.
func (e *writerEnv) waitConverged(m *chatdbtest.Model, deadline time.Duration) {
	e.t.Helper()
	start := time.Now()
	stacktest.WaitFor(e.t, deadline, "the database to hold every change's last version", func() error {
		return m.Diff(context.Background(), e.db, e.prefix)
	})
	e.t.Logf("converged %s after the last record was acknowledged", time.Since(start).Round(time.Millisecond))
}

// records returns msgs and chats as records of the env's topics (see
// chatdbtest.Records).
func (e *writerEnv) records(r *rand.Rand, msgs []change.Message, chats []change.Chat) []stacktest.Record {
	return chatdbtest.Records(r, e.cfg.MessageTopic, e.cfg.ChatTopic, msgs, chats)
}

// produce produces recs at once and waits until Kafka acknowledged them.
func produce(t testing.TB, p *kafka.Producer, recs []stacktest.Record) {
	t.Helper()
	if err := stacktest.Produce(p, recs, len(recs), 0); err != nil {
		t.Fatal(err)
	}
}
