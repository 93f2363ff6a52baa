package stacktest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
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
