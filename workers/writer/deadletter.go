package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/kafkaclient"
	"github.com/chatpoc/chat-poc/internal/publisher"
)

// Dead letters follow change's contract (topic names, headers), shared with
// the sync. A record from a mirrored copy ("b.chat-messages") goes to the
// dead-letter topic of the topic it was mirrored from, on the cluster that
// read it. Its key, value and timestamp are the original's, so it can be
// replayed as it was.

// deadLetters produces records that cannot be stored to their dead-letter
// topics, idempotently with acks=all.
type deadLetters struct {
	producer *kafka.Producer
	cluster  string
}

// deadLetter is one record sent to a dead-letter topic.
type deadLetter struct {
	topic     string // the dead-letter topic
	kind      change.Kind
	source    partitionKey
	offset    int64
	reason    error
	delivered chan kafka.Event // the delivery report
}

// newDeadLetters returns a producer for the dead-letter topics of cluster
// (named for logs and headers) at bootstrap.
func newDeadLetters(bootstrap, cluster, clientID string, log *slog.Logger) (*deadLetters, error) {
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers":         bootstrap,
		"client.id":                 clientID,
		"enable.idempotence":        true,
		"acks":                      "all",
		"linger.ms":                 0,
		"go.delivery.reports":       false, // each send names its channel
		"go.delivery.report.fields": "none",
		"go.events.channel.size":    100,
		"go.logs.channel.enable":    true,
	})
	if err != nil {
		return nil, fmt.Errorf("dead-letter producer: %w", err)
	}
	publisher.Drain(p, log, false)
	return &deadLetters{producer: p, cluster: cluster}, nil
}

// send produces m, a record of kind kd that could not be stored for
// reason, to the dead-letter topic of base (m's topic without a MirrorMaker
// 2 prefix). Its delivery is awaited with the batch (await).
func (d *deadLetters) send(m *kafka.Message, kd change.Kind, base string, reason error) deadLetter {
	dl := deadLetter{
		topic:     change.DeadLetterTopic(base),
		kind:      kd,
		source:    partitionKey{*m.TopicPartition.Topic, m.TopicPartition.Partition},
		offset:    int64(m.TopicPartition.Offset),
		reason:    reason,
		delivered: make(chan kafka.Event, 1),
	}
	headers := append(m.Headers[:len(m.Headers):len(m.Headers)],
		kafka.Header{Key: change.HeaderError, Value: []byte(reason.Error())},
		kafka.Header{Key: change.HeaderSourceCluster, Value: []byte(d.cluster)},
		kafka.Header{Key: change.HeaderSourceTopic, Value: []byte(dl.source.topic)},
		kafka.Header{Key: change.HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(dl.source.partition), 10)},
		kafka.Header{Key: change.HeaderSourceOffset, Value: strconv.AppendInt(nil, dl.offset, 10)},
	)
	err := d.producer.Produce(&kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &dl.topic, Partition: kafka.PartitionAny},
		Key:            m.Key,
		Value:          m.Value,
		Timestamp:      m.Timestamp,
		Headers:        headers,
	}, dl.delivered)
	if err != nil {
		dl.delivered <- kafka.NewError(kafka.ErrFail, fmt.Sprintf("produce: %v", err), false)
	}
	return dl
}

// await waits until Kafka acknowledged every dead letter of a batch, and
// returns the first failure.
func (d *deadLetters) await(ctx context.Context, dead []deadLetter) error {
	for _, dl := range dead {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", dl.topic, ctx.Err())
		case ev := <-dl.delivered:
			var err error
			switch e := ev.(type) {
			case *kafka.Message:
				err = e.TopicPartition.Error
			case kafka.Error:
				err = e
			default:
				err = fmt.Errorf("unexpected delivery event %v", ev)
			}
			if err != nil {
				return fmt.Errorf("to %s: %w", dl.topic, err)
			}
		}
	}
	return nil
}

// ensureTopics creates the dead-letter topics if missing (a broker may not
// create topics on first use).
func (d *deadLetters) ensureTopics(ctx context.Context, topics []string, partitions, replicas int) error {
	admin, err := kafka.NewAdminClientFromProducer(d.producer)
	if err != nil {
		return err
	}
	defer admin.Close()
	specs := make([]publisher.TopicSpec, len(topics))
	for i, t := range topics {
		specs[i] = publisher.TopicSpec{Name: t, Partitions: partitions, ReplicationFactor: replicas}
	}
	return publisher.CreateTopics(ctx, admin, specs, setupTimeout)
}

// close closes the producer within timeout. A dead letter not yet
// acknowledged is dropped here, but its batch was not committed either: its
// record is read, and dead-lettered, again.
func (d *deadLetters) close(timeout time.Duration, log *slog.Logger) {
	if !kafkaclient.CloseProducer(d.producer, timeout) {
		log.Warn("dead-letter producer did not close in time; left closing", "timeout", timeout)
	}
}
