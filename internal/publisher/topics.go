package publisher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/internal/kafkaclient"
)

// TopicSpec describes a topic EnsureTopics creates.
type TopicSpec struct {
	Name              string
	Partitions        int // <= 0: the broker's num.partitions
	ReplicationFactor int // <= 0: the broker's default.replication.factor
}

// ClusterError is the failure of an operation on one cluster; EnsureTopics
// joins one per failed cluster, so a caller can tell which cluster failed.
type ClusterError struct {
	Cluster string
	Err     error
}

// Error names the cluster and what failed there.
func (e *ClusterError) Error() string { return fmt.Sprintf("kafka cluster %s: %v", e.Cluster, e.Err) }

// Unwrap returns the cluster's error.
func (e *ClusterError) Unwrap() error { return e.Err }

// EnsureTopics creates topics on every cluster, in parallel, each within
// OperationTimeout; a topic that already exists is fine (whatever its
// settings). It returns the errors of the clusters that failed, each a
// *ClusterError naming its cluster, joined; the caller decides whether a
// cluster that is down matters.
func (p *Publisher) EnsureTopics(ctx context.Context, topics []TopicSpec) error {
	if p.closed.Load() {
		return fmt.Errorf("ensure topics: %w", ErrClosed)
	}
	for i, t := range topics {
		if t.Name == "" {
			return fmt.Errorf("ensure topics: topic %d has no name", i)
		}
	}
	if len(topics) == 0 {
		return nil
	}
	errs := make([]error, len(p.opts.Clusters))
	var wg sync.WaitGroup
	for i, c := range p.opts.Clusters {
		wg.Go(func() {
			if err := p.createTopics(ctx, c, topics); err != nil {
				errs[i] = &ClusterError{Cluster: c.Name, Err: err}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	return nil
}

func (p *Publisher) createTopics(ctx context.Context, c Cluster, topics []TopicSpec) error {
	// An admin client derived from a plain producer, so that librdkafka's
	// log reaches our logger like the transactional producers' do.
	kp, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers":      c.Bootstrap,
		"client.id":              p.opts.ClientID,
		"go.delivery.reports":    false,
		"go.events.channel.size": eventsChannelSize,
		"go.logs.channel.enable": true,
	})
	if err != nil {
		return err
	}
	Drain(kp, p.log.With("cluster", c.Name), false)
	defer kafkaclient.CloseProducer(kp, p.opts.OperationTimeout)
	admin, err := kafka.NewAdminClientFromProducer(kp)
	if err != nil {
		return err
	}
	defer admin.Close()

	return CreateTopics(ctx, admin, topics, p.opts.OperationTimeout)
}

// CreateTopics creates topics with admin within timeout; a topic that
// already exists is fine (whatever its settings). Partitions or a
// replication factor of 0 take the broker's default.
func CreateTopics(ctx context.Context, admin *kafka.AdminClient, topics []TopicSpec, timeout time.Duration) error {
	specs := make([]kafka.TopicSpecification, len(topics))
	for i, t := range topics {
		specs[i] = kafka.TopicSpecification{Topic: t.Name, NumPartitions: -1, ReplicationFactor: -1}
		if t.Partitions > 0 {
			specs[i].NumPartitions = t.Partitions
		}
		if t.ReplicationFactor > 0 {
			specs[i].ReplicationFactor = t.ReplicationFactor
		}
	}
	opCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The broker waits up to half the request's time for the topics to be
	// created before answering, so they can be used once this returns.
	results, err := admin.CreateTopics(opCtx, specs, kafka.SetAdminOperationTimeout(timeout/2))
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	var errs []error
	for _, r := range results {
		switch r.Error.Code() {
		case kafka.ErrNoError, kafka.ErrTopicAlreadyExists:
		default:
			errs = append(errs, fmt.Errorf("create topic %s: %w", r.Topic, r.Error))
		}
	}
	return errors.Join(errs...)
}
