package stacktest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/deploy/devstack"
)

// CreateTopics creates topics with the given number of partitions
// (replication factor 1) on the Kafka cluster at bootstrap.
func CreateTopics(t testing.TB, bootstrap string, partitions int, topics ...string) {
	t.Helper()
	admin, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": bootstrap})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	specs := make([]kafka.TopicSpecification, len(topics))
	for i, name := range topics {
		specs[i] = kafka.TopicSpecification{Topic: name, NumPartitions: partitions, ReplicationFactor: 1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := admin.CreateTopics(ctx, specs, kafka.SetAdminOperationTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Error.Code() != kafka.ErrNoError {
			t.Fatalf("create topic %s: %v", r.Topic, r.Error)
		}
	}
}

// NewProducer returns an idempotent producer (acks=all, the Java clients'
// partitioner, like the sync's) of the cluster at bootstrap, closed when
// the test ends.
func NewProducer(t testing.TB, bootstrap string) *kafka.Producer {
	t.Helper()
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers": bootstrap, "enable.idempotence": true, "acks": "all",
		"partitioner": "murmur2_random", "linger.ms": 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// Record is a record a test produces.
type Record struct {
	Topic string
	Key   string
	Value []byte
}

// Produce produces recs with p in order, chunk records every interval (all
// at once if interval is 0), and waits until Kafka acknowledged every one.
func Produce(p *kafka.Producer, recs []Record, chunk int, interval time.Duration) error {
	reports := make(chan kafka.Event, len(recs))
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for i := 0; i < len(recs); i += max(chunk, 1) {
		for _, r := range recs[i:min(i+max(chunk, 1), len(recs))] {
			err := p.Produce(&kafka.Message{
				TopicPartition: kafka.TopicPartition{Topic: &r.Topic, Partition: kafka.PartitionAny},
				Key:            []byte(r.Key), Value: r.Value,
			}, reports)
			if err != nil {
				return fmt.Errorf("produce to %s: %w", r.Topic, err)
			}
		}
		if tick != nil {
			<-tick
		}
	}
	for range recs {
		select {
		case ev := <-reports:
			if m, ok := ev.(*kafka.Message); !ok || m.TopicPartition.Error != nil {
				return fmt.Errorf("delivery: %v", ev)
			}
		case <-time.After(time.Minute):
			return errors.New("no delivery report within a minute")
		}
	}
	return nil
}

// KafkaTransactions runs Kafka's own transactions tool (what
// kafka-transactions.sh runs) from the stack's Kafka jars against the
// cluster at bootstrap, and returns its output.
func KafkaTransactions(ctx context.Context, c *devstack.Client, bootstrap string, args ...string) (string, error) {
	libs, err := c.Env().Get(devstack.EnvKafkaLibs)
	if err != nil {
		return "", err
	}
	argv := append([]string{"-cp", filepath.Join(libs, "*"), "org.apache.kafka.tools.TransactionsCommand",
		"--bootstrap-server", bootstrap}, args...)
	out, err := exec.CommandContext(ctx, "java", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kafka-transactions %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// HangingTransaction is one row of kafka-transactions' find-hanging: a
// transaction open on a partition that its coordinator does not know of,
// which holds the partition's last stable offset until it is aborted.
type HangingTransaction struct {
	Topic       string
	Partition   int
	StartOffset int64
	Row         string // the tool's row, for logs
}

// FindHangingTransactions runs find-hanging on broker 1 (the stack's
// clusters are one node each) for transactions open longer than
// maxAgeMinutes, and parses its table.
func FindHangingTransactions(ctx context.Context, c *devstack.Client, bootstrap string, maxAgeMinutes int) ([]HangingTransaction, error) {
	out, err := KafkaTransactions(ctx, c, bootstrap, "find-hanging", "--broker-id", "1",
		"--max-transaction-timeout", strconv.Itoa(maxAgeMinutes))
	if err != nil {
		return nil, err
	}
	// Columns: Topic Partition ProducerId ProducerEpoch CoordinatorEpoch StartOffset LastTimestamp Duration(min)
	var found []HangingTransaction
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] == "Topic" {
			continue
		}
		part, err1 := strconv.Atoi(f[1])
		start, err2 := strconv.ParseInt(f[5], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		found = append(found, HangingTransaction{Topic: f[0], Partition: part, StartOffset: start, Row: line})
	}
	return found, nil
}

// AbortTransaction aborts the transaction that starts at h's offset, as
// an operator would a hanging one (kafka-transactions.sh abort).
func AbortTransaction(ctx context.Context, c *devstack.Client, bootstrap string, h HangingTransaction) error {
	_, err := KafkaTransactions(ctx, c, bootstrap, "abort", "--topic", h.Topic,
		"--partition", strconv.Itoa(h.Partition), "--start-offset", strconv.FormatInt(h.StartOffset, 10))
	return err
}

// WaitTransactionsSettled waits until, on every partition of topics on one
// cluster, the last stable offset (how far read_committed
// consumers can read) has reached the end the partition had when the wait
// began: the transactions a restart left open are committed or aborted, so
// whatever runs next reads the cluster normally.
//
// Their coordinator aborts them within the transaction timeout (10 s).
// What still holds a partition a minute later is a transaction no
// coordinator will end — a hanging transaction, which Kafka leaves to an
// operator — so the wait then looks for them with Kafka's own
// find-hanging, aborts each (as kafka-transactions.sh abort would), and
// logs it, so the test's own checks then say whether anything acknowledged
// was in them. Kafka leaves one when it skips a commit's markers
// (KAFKA-20734; one CI run lost 11 acknowledged changes that way before the
// publisher confirmed its commits). It fails naming the partitions still
// held back.
func WaitTransactionsSettled(t testing.TB, c *devstack.Client, cluster, bootstrap string, topics []string, deadline time.Duration) {
	t.Helper()
	admin, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": bootstrap})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	specs := map[kafka.TopicPartition]kafka.OffsetSpec{}
	for _, tp := range Partitions(t, admin, cluster, topics...) {
		specs[tp] = kafka.LatestOffsetSpec
	}
	offsets := func(level kafka.IsolationLevel) (map[string]kafka.Offset, error) {
		res, err := admin.ListOffsets(ctx, specs, kafka.SetAdminIsolationLevel(level))
		if err != nil {
			return nil, err
		}
		out := map[string]kafka.Offset{}
		for tp, info := range res.ResultInfos {
			if info.Error.Code() != kafka.ErrNoError {
				return nil, fmt.Errorf("%s[%d]: %v", *tp.Topic, tp.Partition, info.Error)
			}
			out[fmt.Sprintf("%s[%d]", *tp.Topic, tp.Partition)] = info.Offset
		}
		return out, nil
	}
	var ends map[string]kafka.Offset
	WaitFor(t, deadline, "the ends of cluster "+cluster+"'s partitions", func() error {
		ends, err = offsets(kafka.IsolationLevelReadUncommitted)
		return err
	})
	began := time.Now()
	var hunted time.Time
	WaitFor(t, deadline, "cluster "+cluster+"'s open transactions to settle", func() error {
		stable, err := offsets(kafka.IsolationLevelReadCommitted)
		if err != nil {
			return err
		}
		var held []string
		for p, end := range ends {
			if stable[p] < end {
				held = append(held, fmt.Sprintf("%s stable at %d, end %d", p, stable[p], end))
			}
		}
		if len(held) == 0 {
			return nil
		}
		if time.Since(began) > time.Minute && time.Since(hunted) > 30*time.Second {
			hunted = time.Now()
			abortHanging(ctx, t, c, cluster, bootstrap)
		}
		return fmt.Errorf("held back by open transactions: %s", strings.Join(held, "; "))
	})
}

// abortHanging finds the transactions open on cluster for over a minute
// that their coordinator does not know of, and aborts each, logging it.
func abortHanging(ctx context.Context, t testing.TB, c *devstack.Client, cluster, bootstrap string) {
	t.Helper()
	hctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	hanging, err := FindHangingTransactions(hctx, c, bootstrap, 1)
	if err != nil {
		t.Logf("look for hanging transactions on cluster %s: %v", cluster, err)
		return
	}
	if len(hanging) == 0 {
		t.Logf("cluster %s: partitions held back, but find-hanging finds no hanging transaction", cluster)
	}
	for _, h := range hanging {
		err := AbortTransaction(hctx, c, bootstrap, h)
		t.Logf("HANGING TRANSACTION on cluster %s (its coordinator will never end it): %s; aborted: %v", cluster, strings.Join(strings.Fields(h.Row), " "), err)
	}
}

// MetadataSource is a Kafka client that reads cluster metadata (a
// consumer, a producer or an admin client).
type MetadataSource interface {
	GetMetadata(topic *string, allTopics bool, timeoutMs int) (*kafka.Metadata, error)
}

// Partitions lists the partitions of topics on a cluster.
func Partitions(t testing.TB, md MetadataSource, cluster string, topics ...string) []kafka.TopicPartition {
	t.Helper()
	var tps []kafka.TopicPartition
	for _, topic := range topics {
		m, err := md.GetMetadata(&topic, false, 10000)
		if err != nil {
			t.Fatalf("metadata of %s on %s: %v", topic, cluster, err)
		}
		for _, p := range m.Topics[topic].Partitions {
			tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p.ID})
		}
	}
	if len(tps) == 0 {
		t.Fatalf("no partitions of %v on cluster %s", topics, cluster)
	}
	return tps
}
