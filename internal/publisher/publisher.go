package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/internal/kafkaclient"
)

// Defaults of the Options durations.
const (
	// DefaultTransactionTimeout is short because an open transaction of a
	// dead producer blocks read_committed consumers until it times out.
	DefaultTransactionTimeout = 10 * time.Second
	// DefaultOperationTimeout bounds each init, delivery, commit and abort
	// on a cluster before the cluster counts as unreachable.
	DefaultOperationTimeout = 5 * time.Second
	// DefaultClientID is the Kafka client.id when Options.ClientID is empty.
	DefaultClientID = "chat-poc-publisher"
)

// minTransactionTimeout is librdkafka's lower bound of transaction.timeout.ms.
const minTransactionTimeout = time.Second

// Cluster is one Kafka cluster the Publisher may write to.
type Cluster struct {
	Name      string // names the cluster in results, errors and logs, e.g. "a"
	Bootstrap string // bootstrap.servers
}

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one Kafka record to publish.
type Record struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers []Header
}

// Options configure a Publisher.
type Options struct {
	// Clusters in order of preference; at least one, names unique.
	Clusters []Cluster
	// TransactionalID is shared by every Publisher that may publish the same
	// stream, so that a new one fences the old ones. Required.
	TransactionalID string
	// TransactionTimeout is transaction.timeout.ms; DefaultTransactionTimeout
	// when zero, at least one second otherwise.
	TransactionTimeout time.Duration
	// OperationTimeout bounds init, delivery, commit and abort on one cluster
	// before it counts as unreachable; DefaultOperationTimeout when zero.
	OperationTimeout time.Duration
	// ClientID is the Kafka client.id; DefaultClientID when empty.
	ClientID string
	// Debug lists librdkafka debug contexts to switch on (e.g.
	// "eos,broker"), whose lines are logged at info; empty: none.
	Debug string
	// Logger receives failover transitions and librdkafka's own log at debug
	// level; nil discards.
	Logger *slog.Logger
	// OnUnconfirmed, when set, is called with a cluster's name each time that
	// cluster acknowledged a commit whose records did not become visible to
	// read_committed consumers within OperationTimeout (the batch is then
	// published on the next cluster). For a metric; it must not block.
	OnUnconfirmed func(cluster string)
}

// Errors Publish and EnsureTopics wrap; test with errors.Is.
var (
	// ErrFenced means a newer producer with the same transactional.id took
	// over (or the producer failed fatally): the caller is stale and must stop.
	ErrFenced = errors.New("kafka producer fenced by a newer instance or failed fatally")
	// ErrRejected means a record can never be published as it is (too large,
	// invalid topic, ...); the transaction was aborted. Retrying cannot help.
	ErrRejected = errors.New("kafka rejected a record")
	// ErrUnavailable means no cluster took the batch; the caller may retry.
	ErrUnavailable = errors.New("no kafka cluster available")
	// ErrClosed means the Publisher was closed.
	ErrClosed = errors.New("publisher closed")
)

// Publisher publishes batches of records transactionally to the first
// cluster of its list that works. It is safe for concurrent use; Publish
// calls are serialized.
type Publisher struct {
	opts    Options
	log     *slog.Logger
	current atomic.Int32 // index of the cluster the next Publish tries first
	closed  atomic.Bool

	mu        sync.Mutex     // held by Publish and Close for their whole run
	producers []*txnProducer // by cluster index; nil until used and after a discard
	down      []bool         // cluster failed when last tried; for logging transitions only
	lastUsed  int            // cluster that took the last batch; -1 before the first
}

// New validates opts, fills in defaults and returns a Publisher. It does no
// I/O: producers are created by the first Publish that needs them.
func New(opts Options) (*Publisher, error) {
	if len(opts.Clusters) == 0 {
		return nil, errors.New("publisher: no clusters")
	}
	seen := make(map[string]bool, len(opts.Clusters))
	for i, c := range opts.Clusters {
		switch {
		case c.Name == "":
			return nil, fmt.Errorf("publisher: cluster %d has no name", i)
		case c.Bootstrap == "":
			return nil, fmt.Errorf("publisher: cluster %s has no bootstrap servers", c.Name)
		case seen[c.Name]:
			return nil, fmt.Errorf("publisher: cluster name %s used twice", c.Name)
		}
		seen[c.Name] = true
	}
	if opts.TransactionalID == "" {
		return nil, errors.New("publisher: TransactionalID is required")
	}
	switch {
	case opts.TransactionTimeout == 0:
		opts.TransactionTimeout = DefaultTransactionTimeout
	case opts.TransactionTimeout < minTransactionTimeout:
		return nil, fmt.Errorf("publisher: TransactionTimeout %s is below %s", opts.TransactionTimeout, minTransactionTimeout)
	}
	switch {
	case opts.OperationTimeout == 0:
		opts.OperationTimeout = DefaultOperationTimeout
	case opts.OperationTimeout < 0:
		return nil, fmt.Errorf("publisher: negative OperationTimeout %s", opts.OperationTimeout)
	}
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts.Clusters = append([]Cluster(nil), opts.Clusters...)
	return &Publisher{
		opts:      opts,
		log:       log.With("transactional_id", opts.TransactionalID),
		producers: make([]*txnProducer, len(opts.Clusters)),
		down:      make([]bool, len(opts.Clusters)),
		lastUsed:  -1,
	}, nil
}

// Current returns the name of the cluster the next Publish tries first.
func (p *Publisher) Current() string {
	return p.opts.Clusters[p.current.Load()].Name
}

// Publish writes recs in one transaction and returns the name of the cluster
// that committed it, once the records are visible to read_committed consumers
// there (see "Confirmation" in the package doc). An unreachable cluster, or a
// commit not confirmed, makes it publish the whole batch on the next cluster;
// it fails with ErrUnavailable when every cluster failed, with ErrFenced
// (without trying another cluster) when this producer was fenced, with
// ErrRejected when a record was refused for good. Any other error is
// retryable. An empty recs publishes nothing and returns an empty name.
//
// ctx bounds the call; a cancellation is noticed between the steps of a
// cluster's transaction, each of which is bounded by OperationTimeout. A
// cluster that is down costs at most a few OperationTimeouts (the step that
// timed out, the abort, the close) before the next one is tried.
func (p *Publisher) Publish(ctx context.Context, recs []Record) (string, error) {
	for i, r := range recs {
		if r.Topic == "" {
			return "", fmt.Errorf("publish: record %d has no topic: %w", i, ErrRejected)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return "", fmt.Errorf("publish: %w", ErrClosed)
	}
	if len(recs) == 0 {
		return "", nil
	}
	n := len(p.opts.Clusters)
	start := int(p.current.Load())
	var failures []error
	for i := range n {
		idx := (start + i) % n
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("publish %d records: %w", len(recs), errors.Join(append(failures, err)...))
		}
		err := p.publishOn(ctx, idx, recs)
		if err == nil {
			p.markUp(idx)
			return p.opts.Clusters[idx].Name, nil
		}
		var down *clusterDown
		if !errors.As(err, &down) {
			return "", err
		}
		failures = append(failures, err)
		next := (idx + 1) % n
		p.markDown(idx, next, err)
		p.current.Store(int32(next))
	}
	return "", fmt.Errorf("publish %d records: %w: %w", len(recs), ErrUnavailable, errors.Join(failures...))
}

// markDown logs that cluster idx failed, once until it works again.
func (p *Publisher) markDown(idx, next int, err error) {
	if p.down[idx] {
		return
	}
	p.down[idx] = true
	attrs := []any{"cluster", p.opts.Clusters[idx].Name, "err", err}
	if next != idx {
		attrs = append(attrs, "next", p.opts.Clusters[next].Name)
	}
	p.log.Warn("kafka cluster unreachable", attrs...)
}

// markUp logs that cluster idx took a batch, when that is news.
func (p *Publisher) markUp(idx int) {
	name := p.opts.Clusters[idx].Name
	if p.down[idx] {
		p.down[idx] = false
		p.log.Info("kafka cluster reachable again", "cluster", name)
	}
	if idx != p.lastUsed {
		attrs := []any{"cluster", name}
		if p.lastUsed >= 0 {
			attrs = append(attrs, "previous", p.opts.Clusters[p.lastUsed].Name)
		}
		p.log.Info("publishing to kafka cluster", attrs...)
		p.lastUsed = idx
	}
}

// publishOn runs one transaction with recs on cluster idx. Every way out
// leaves no transaction open: committed, aborted, or the producer discarded.
// A *clusterDown error asks the caller to try the next cluster.
func (p *Publisher) publishOn(ctx context.Context, idx int, recs []Record) error {
	tp, err := p.producer(ctx, idx)
	if err != nil {
		return err
	}
	if err := tp.kp.BeginTransaction(); err != nil {
		return p.fail(ctx, idx, stepBegin, err)
	}
	tp.inTxn = true

	// Buffered for every report so that librdkafka's poller never blocks on
	// it, even after this call stopped listening (its channel is then garbage).
	reports := make(chan kafka.Event, len(recs))
	for i := range recs {
		if err := tp.kp.Produce(message(&recs[i], i), reports); err != nil {
			return p.fail(ctx, idx, stepProduce, fmt.Errorf("record %d (topic %s): %w", i, recs[i].Topic, err))
		}
	}
	delivered := batchEnds{}
	if err := p.awaitDelivery(ctx, reports, len(recs), delivered); err != nil {
		return p.fail(ctx, idx, stepDeliver, err)
	}

	opCtx, cancel := context.WithTimeout(ctx, p.opts.OperationTimeout)
	defer cancel()
	if err := tp.kp.CommitTransaction(opCtx); err != nil {
		return p.fail(ctx, idx, stepCommit, err)
	}
	tp.inTxn = false
	if err := p.confirm(ctx, tp, delivered); err != nil {
		return p.unconfirmed(ctx, idx, err)
	}
	return nil
}

// unconfirmedMsg is the message logged for each unconfirmed commit.
const unconfirmedMsg = "kafka commit not confirmed visible to read_committed consumers; publishing the batch on the next cluster"

// unconfirmed handles a commit of cluster idx that could not be confirmed:
// the batch is published again on the next cluster (a duplicate at worst,
// where the records become visible later). Each occurrence is logged and
// reported to Options.OnUnconfirmed: most are a cluster that stopped right
// after a commit, but a commit that never becomes visible leaves a hanging
// transaction that holds back every later record of its partitions on that
// cluster until an operator aborts it.
func (p *Publisher) unconfirmed(ctx context.Context, idx int, err error) error {
	c := p.opts.Clusters[idx]
	p.discard(idx)
	wrapped := fmt.Errorf("%s on kafka cluster %s: %w", stepConfirm, c.Name, err)
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", wrapped, ctx.Err())
	}
	p.log.Warn(unconfirmedMsg, "cluster", c.Name, "err", err,
		"hint", "if it recurs, look for a hanging transaction: kafka-transactions.sh --bootstrap-server <cluster> find-hanging --broker-id <id>")
	if p.opts.OnUnconfirmed != nil {
		p.opts.OnUnconfirmed(c.Name)
	}
	return &clusterDown{err: wrapped}
}

// awaitDelivery waits for n delivery reports, adding the offset of each
// delivered record to delivered, and returns the most telling delivery error
// among them, if any, or a timeout after OperationTimeout.
func (p *Publisher) awaitDelivery(ctx context.Context, reports <-chan kafka.Event, n int, delivered batchEnds) error {
	timer := time.NewTimer(p.opts.OperationTimeout)
	defer timer.Stop()
	var worst error
	worstRank := -1
	for got := 0; got < n; got++ {
		select {
		case ev := <-reports:
			m, ok := ev.(*kafka.Message)
			if !ok {
				continue
			}
			if m.TopicPartition.Error == nil {
				delivered.add(m.TopicPartition)
				continue
			}
			topic := ""
			if m.TopicPartition.Topic != nil {
				topic = *m.TopicPartition.Topic
			}
			if r := deliveryRank(m.TopicPartition.Error); r > worstRank {
				worstRank = r
				worst = fmt.Errorf("deliver record %v (topic %s): %w", m.Opaque, topic, m.TopicPartition.Error)
			}
		case <-timer.C:
			return fmt.Errorf("%w after %s (%d of %d records acknowledged)", errDeliveryTimeout, p.opts.OperationTimeout, got, n)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return worst
}

func message(r *Record, i int) *kafka.Message {
	topic := r.Topic
	m := &kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny},
		Key:            r.Key,
		Value:          r.Value,
		Opaque:         i,
	}
	if len(r.Headers) > 0 {
		m.Headers = make([]kafka.Header, len(r.Headers))
		for j, h := range r.Headers {
			m.Headers[j] = kafka.Header{Key: h.Key, Value: h.Value}
		}
	}
	return m
}

// producer returns cluster idx's producer, creating and initializing it
// (the fence) when there is none.
func (p *Publisher) producer(ctx context.Context, idx int) (*txnProducer, error) {
	if tp := p.producers[idx]; tp != nil {
		return tp, nil
	}
	c := p.opts.Clusters[idx]
	tp, err := newTxnProducer(c, p.opts, p.log)
	if err != nil {
		return nil, fmt.Errorf("create producer for kafka cluster %s: %w", c.Name, err)
	}
	p.producers[idx] = tp
	opCtx, cancel := context.WithTimeout(ctx, p.opts.OperationTimeout)
	defer cancel()
	if err := tp.kp.InitTransactions(opCtx); err != nil {
		return nil, p.fail(ctx, idx, stepInit, err)
	}
	return tp, nil
}

// fail handles err of step on cluster idx: it ends the transaction (abort,
// or discard the producer) as the error requires and returns the error to
// report, a *clusterDown when the next cluster should be tried.
func (p *Publisher) fail(ctx context.Context, idx int, s step, err error) error {
	c := p.opts.Clusters[idx]
	tp := p.producers[idx]
	wrapped := fmt.Errorf("%s on kafka cluster %s: %w", s, c.Name, err)

	if fatal := tp.kp.GetFatalError(); fatal != nil || isFenced(err) {
		// The producer is unusable; what err says then is a consequence
		// (purged records, state errors) of the fatal error.
		p.discard(idx)
		if fatal == nil {
			fatal = err
		}
		return fmt.Errorf("%s on kafka cluster %s: %w: %w", s, c.Name, ErrFenced, fatal)
	}
	if s == stepInit || s == stepBegin {
		// A producer whose init did not finish, or that cannot begin a
		// transaction, is of no further use.
		p.discard(idx)
	}
	if ctx.Err() != nil {
		// The caller gave up; that says nothing about the cluster.
		p.endTxn(ctx, idx)
		return fmt.Errorf("%w: %w", wrapped, ctx.Err())
	}
	switch classify(s, err) {
	case kindRejected:
		p.endTxn(ctx, idx)
		return fmt.Errorf("%w: %w", ErrRejected, wrapped)
	case kindAbortable:
		p.endTxn(ctx, idx)
		return wrapped
	default:
		if tp.inTxn {
			_ = p.abort(ctx, tp) // best effort: the producer goes anyway
		}
		p.discard(idx)
		return &clusterDown{err: wrapped}
	}
}

// endTxn aborts the open transaction of cluster idx, if any; a producer that
// cannot abort is discarded, so that the next Publish starts afresh.
func (p *Publisher) endTxn(ctx context.Context, idx int) {
	tp := p.producers[idx]
	if tp == nil || !tp.inTxn {
		return
	}
	if err := p.abort(ctx, tp); err != nil {
		p.log.Debug("abort failed; discarding producer", "cluster", tp.cluster.Name, "err", err)
		p.discard(idx)
	}
}

// abort aborts tp's transaction within OperationTimeout, even when ctx is
// already done.
func (p *Publisher) abort(ctx context.Context, tp *txnProducer) error {
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.OperationTimeout)
	defer cancel()
	if err := tp.kp.AbortTransaction(opCtx); err != nil {
		return err
	}
	tp.inTxn = false
	return nil
}

// discard closes cluster idx's producer (bounded) and forgets it.
func (p *Publisher) discard(idx int) {
	if tp := p.producers[idx]; tp != nil {
		p.producers[idx] = nil
		p.closeProducer(tp)
	}
}

func (p *Publisher) closeProducer(tp *txnProducer) {
	tp.admin.Close() // derived from tp.kp: releases nothing of kp's
	if !kafkaclient.CloseProducer(tp.kp, p.opts.OperationTimeout) {
		p.log.Warn("kafka producer did not close in time; left closing in the background",
			"cluster", tp.cluster.Name, "timeout", p.opts.OperationTimeout)
	}
}

// Close aborts an open transaction, if any, and closes the producers, each
// within OperationTimeout (in parallel); it waits for a Publish in progress.
// Close is idempotent; Publish and EnsureTopics fail with ErrClosed after it.
func (p *Publisher) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Swap(true) {
		return
	}
	var wg sync.WaitGroup
	for idx, tp := range p.producers {
		if tp == nil {
			continue
		}
		p.producers[idx] = nil
		wg.Go(func() {
			if tp.inTxn {
				_ = p.abort(context.Background(), tp)
			}
			p.closeProducer(tp)
		})
	}
	wg.Wait()
}
