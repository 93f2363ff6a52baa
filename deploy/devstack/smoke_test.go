package devstack_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
)

// mirrorDeadline is how long MirrorMaker 2 may take to carry a record on a new
// topic to the other cluster (it looks for new topics every few seconds).
const mirrorDeadline = 30 * time.Second

func TestKafkaMirrorsBothWays(t *testing.T) {
	stack := stacktest.Connect(t)
	a := stacktest.Env(t, stack, devstack.EnvKafkaABootstrap)
	b := stacktest.Env(t, stack, devstack.EnvKafkaBBootstrap)
	tests := []struct {
		name           string
		source, target string
		prefix         string // MM2's DefaultReplicationPolicy names a mirrored topic <source cluster>.<topic>
	}{
		{name: "a to b", source: a, target: b, prefix: "a."},
		{name: "b to a", source: b, target: a, prefix: "b."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := stacktest.UniqueName("smoke")
			value := stacktest.UniqueName("value")
			produce(t, tc.source, topic, value)
			got := consumeUntil(t, tc.target, tc.prefix+topic, value, mirrorDeadline)
			if got != value {
				t.Fatalf("mirrored topic %s%s: got %q, want %q", tc.prefix, topic, got, value)
			}
		})
	}
}

func produce(t *testing.T, bootstrap, topic, value string) {
	t.Helper()
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	delivered := make(chan kafka.Event, 1)
	err = p.Produce(&kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny},
		Key:            []byte("smoke"),
		Value:          []byte(value),
	}, delivered)
	if err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
	select {
	case ev := <-delivered:
		if m := ev.(*kafka.Message); m.TopicPartition.Error != nil {
			t.Fatalf("deliver to %s: %v", topic, m.TopicPartition.Error)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no delivery report from %s within 30s", bootstrap)
	}
}

// consumeUntil reads topic from the beginning until a record with value
// arrives or the deadline passes; it returns the value it found.
func consumeUntil(t *testing.T, bootstrap, topic, value string, deadline time.Duration) string {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":                  bootstrap,
		"group.id":                           stacktest.UniqueName("smoke-group"),
		"auto.offset.reset":                  "earliest",
		"isolation.level":                    "read_committed",
		"topic.metadata.refresh.interval.ms": 1000, // the mirrored topic appears while we wait
		"allow.auto.create.topics":           false,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(topic, nil); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for end := time.Now().Add(deadline); time.Now().Before(end); {
		msg, err := c.ReadMessage(500 * time.Millisecond)
		var kerr kafka.Error
		switch {
		case err == nil:
			if string(msg.Value) == value {
				return value
			}
			seen = append(seen, string(msg.Value))
		case errors.As(err, &kerr) && (kerr.IsTimeout() || kerr.Code() == kafka.ErrUnknownTopicOrPart):
			// nothing yet, or the mirrored topic does not exist yet
		default:
			t.Fatalf("consume %s: %v", topic, err)
		}
	}
	t.Fatalf("%q did not arrive on %s within %s (saw %d other records: %v)", value, topic, deadline, len(seen), seen)
	return ""
}

func TestPostgresStandbyReplicatesPrimary(t *testing.T) {
	stack := stacktest.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	primary := connectPG(ctx, t, stacktest.Env(t, stack, devstack.EnvPGPrimaryDSN))
	standby := connectPG(ctx, t, stacktest.Env(t, stack, devstack.EnvPGStandbyDSN))

	table := pgx.Identifier{strings.ReplaceAll(stacktest.UniqueName("smoke"), "-", "_")}.Sanitize()
	want := stacktest.UniqueName("row")
	if _, err := primary.Exec(ctx, "CREATE TABLE "+table+" (v text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = primary.Exec(context.Background(), "DROP TABLE "+table) })
	if _, err := primary.Exec(ctx, "INSERT INTO "+table+" (v) VALUES ($1)", want); err != nil {
		t.Fatal(err)
	}

	var got string
	stacktest.WaitFor(t, 30*time.Second, "the row to reach the standby", func() error {
		return standby.QueryRow(ctx, "SELECT v FROM "+table).Scan(&got)
	})
	if got != want {
		t.Fatalf("standby has %q, want %q", got, want)
	}
	var readOnly string
	if err := standby.QueryRow(ctx, "SHOW transaction_read_only").Scan(&readOnly); err != nil {
		t.Fatal(err)
	}
	if readOnly != "on" {
		t.Fatalf("standby transaction_read_only = %q, want on (is it really a hot standby?)", readOnly)
	}
}

func connectPG(ctx context.Context, t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestRedisRunsLuaWithKeysAndArgv(t *testing.T) {
	stack := stacktest.Connect(t)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: stacktest.Env(t, stack, devstack.EnvRedisAddr)})
	defer rdb.Close()
	key := stacktest.UniqueName("smoke")
	t.Cleanup(func() { rdb.Del(context.Background(), key) })

	// Store ARGV[1] only if it is greater than what the key holds: the shape of
	// the version-checked writes later issues build.
	script := redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0`)
	for _, tc := range []struct {
		version string
		want    int64
	}{{"5", 1}, {"3", 0}, {"7", 1}, {"7", 0}} {
		got, err := script.Run(ctx, rdb, []string{key}, tc.version).Int64()
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("set %s: got %d, want %d", tc.version, got, tc.want)
		}
	}
	if v, err := rdb.Get(ctx, key).Result(); err != nil || v != "7" {
		t.Fatalf("final value %q (%v), want 7", v, err)
	}
}

func greet(ctx workflow.Context, name string) (string, error) {
	return "hello " + name, nil
}

func TestTemporalRunsWorkflow(t *testing.T) {
	stack := stacktest.Connect(t)
	c, err := client.Dial(client.Options{
		HostPort:  stacktest.Env(t, stack, devstack.EnvTemporalAddress),
		Namespace: stacktest.Env(t, stack, devstack.EnvTemporalNamespace),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	queue := stacktest.UniqueName("smoke")
	w := worker.New(c, queue, worker.Options{})
	w.RegisterWorkflow(greet)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: queue, TaskQueue: queue}, greet, "devstack")
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := run.Get(ctx, &got); err != nil {
		t.Fatal(err)
	}
	if got != "hello devstack" {
		t.Fatalf("workflow returned %q", got)
	}
}
