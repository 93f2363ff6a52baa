// Package live turns the change topics into WebSocket pushes: each instance
// of the internal app consumes every change (its own consumer group), and a
// change is pushed to the browsers only if it is newer than what was seen —
// Redis's compare-and-set decides, or, while Redis is down, the instance's
// memory of recent versions.
package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatpoc/chat-poc/apps/internal/cache"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/kafkaclient"
)

// Notifier receives the changes that are new.
type Notifier interface {
	MessageChanged(m change.Message)
	ChatCreated(id string)
	ChatDeleted(id string)
}

// Timing of the consumer.
const (
	pollTimeout = 100 * time.Millisecond
	// cacheTimeout bounds one Redis script; a Redis that does not answer
	// within it counts as down, and memory decides.
	cacheTimeout = 500 * time.Millisecond
	// redisRetry is how often a Redis that is down is pinged.
	redisRetry = time.Second
	// closeTimeout bounds closing the Kafka consumer (leaving the group,
	// committing) at the end of Run, within the process's grace period.
	closeTimeout = 5 * time.Second
)

// Consumer reads change records and notifies the new ones.
type Consumer struct {
	consumer *kafka.Consumer
	group    string
	topics   change.Topics
	cache    *cache.Cache
	mem      *Memory
	lag      *PostgresLag
	notify   Notifier
	metrics  *Metrics
	outage   *kafkaclient.Outage
	log      *slog.Logger

	redisDown     atomic.Bool
	lastPing      time.Time
	commitFailing bool         // the last offset commit failed (logged once)
	polled        atomic.Int64 // unix nanoseconds of the loop's last turn
}

// NewConsumer returns a consumer that reads topics with consumer (not yet
// subscribed, a member of group, reading a partition without a committed
// offset from its beginning), decides with c and mem, tells notify, and
// gives lag the messages it cached.
func NewConsumer(consumer *kafka.Consumer, group string, topics change.Topics, c *cache.Cache, mem *Memory, lag *PostgresLag,
	notify Notifier, m *Metrics, log *slog.Logger) *Consumer {
	return &Consumer{consumer: consumer, group: group, topics: topics, cache: c, mem: mem, lag: lag, notify: notify, metrics: m,
		outage: kafkaclient.NewOutage(log, m.kafkaDown), log: log}
}

// Outage tracks the consumer's Kafka outages (for the progress probe,
// which notices the end of one).
func (c *Consumer) Outage() *kafkaclient.Outage { return c.outage }

// Polled returns when the consumer's loop last went round (zero before
// Run): a loop that stopped going round is stalled (see
// kafkaclient.ProgressOptions.Polled).
func (c *Consumer) Polled() time.Time {
	if n := c.polled.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (c *Consumer) markPolled() { c.polled.Store(time.Now().UnixNano()) }

// RedisDown reports whether the last Redis call failed: the app is
// degraded (memory decides, loads come from Postgres and memory).
func (c *Consumer) RedisDown() bool { return c.redisDown.Load() }

// Run consumes until ctx ends, then closes the consumer (committing the
// offsets of what it handled), giving up on the close after closeTimeout.
// It returns an error when the consumer fails fatally: the process must
// restart to get a new one.
func (c *Consumer) Run(ctx context.Context) error {
	defer func() {
		if !kafkaclient.CloseConsumer(c.consumer, closeTimeout) {
			c.log.Warn("Kafka consumer did not close in time; left closing", "timeout", closeTimeout)
		}
	}()
	if err := c.startNewGroupAtEnd(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before Kafka answered
		}
		return err
	}
	if err := c.consumer.SubscribeTopics([]string{c.topics.Subscription()}, nil); err != nil {
		return fmt.Errorf("subscribe to %s: %w", c.topics.Subscription(), err)
	}
	c.log.Info("consuming", "topics", c.topics.Subscription())
	for ctx.Err() == nil {
		c.markPolled()
		switch e := c.consumer.Poll(int(pollTimeout.Milliseconds())).(type) {
		case *kafka.Message:
			c.outage.Reachable()
			c.handle(ctx, e)
			// Handled: its offset may be committed (auto-commit of stored
			// offsets), so a restart resumes after it.
			if _, err := c.consumer.StoreMessage(e); err != nil {
				c.log.Debug("store offset", "err", err)
			}
		case kafka.Error:
			if e.IsFatal() {
				// Logged here, not only when Run's caller gets it: the
				// close that follows may take its full timeout.
				c.log.Error("Kafka consumer failed fatally; stopping", "err", e)
				return kafkaclient.FatalError(e)
			}
			c.metrics.kafkaErrors.Inc()
			c.outage.ClientError(e)
		case kafka.OffsetsCommitted:
			c.committed(e)
		}
		c.checkRedis(ctx)
	}
	return nil
}

// committed counts and logs a failed offset commit (once, until one
// succeeds again): the handled records are not lost, but a restart would
// read them again from the last committed offset, and a group whose
// commits keep failing is not the group it should be.
func (c *Consumer) committed(e kafka.OffsetsCommitted) {
	err := e.Error
	for _, tp := range e.Offsets {
		if err == nil && tp.Error != nil {
			err = fmt.Errorf("%s[%d]: %w", *tp.Topic, tp.Partition, tp.Error)
		}
	}
	if kerr := (kafka.Error{}); errors.As(err, &kerr) && kerr.Code() == kafka.ErrNoOffset {
		return // nothing new to commit
	}
	if err == nil {
		if c.commitFailing {
			c.log.Info("Kafka offset commits succeed again")
			c.commitFailing = false
		}
		return
	}
	c.metrics.commitErrors.Inc()
	if !c.commitFailing {
		c.log.Warn("Kafka offset commit failed; retried at the next commit (a restart until then reads again from the last committed offset)", "err", err)
		c.commitFailing = true
	}
}

// startNewGroupAtEnd's timing: each try is bounded by groupStartTimeout,
// and it tries again after groupStartRetry while Kafka does not answer
// (together below the watchdog's grace for a loop that does not poll).
const (
	groupStartTimeout = 3 * time.Second
	groupStartRetry   = time.Second
)

// startNewGroupAtEnd makes a group that has never committed start at the
// end of the change topics (kafkaclient.StartNewGroupAtEnd); the consumer
// reads a partition that has no committed offset from its beginning
// (auto.offset.reset=earliest). It tries until it has checked the group or
// ctx ends (its error then).
func (c *Consumer) startNewGroupAtEnd(ctx context.Context) error {
	admin, err := kafka.NewAdminClientFromConsumer(c.consumer)
	if err != nil {
		return fmt.Errorf("admin client on the live consumer: %w", err)
	}
	defer admin.Close()
	match := func(topic string) bool { _, _, ok := c.topics.Parse(topic); return ok }
	for logged := false; ; {
		c.markPolled() // waiting for Kafka, not stuck
		actx, cancel := context.WithTimeout(ctx, groupStartTimeout)
		started, err := kafkaclient.StartNewGroupAtEnd(actx, admin, c.group, match)
		cancel()
		if err == nil {
			if started {
				c.log.Info("new consumer group: starts at the end of the change topics", "group", c.group)
			}
			return nil
		}
		if !logged {
			c.log.Warn("checking the consumer group's offsets; retrying", "group", c.group, "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(groupStartRetry):
		}
	}
}

// handle applies one record and notifies it if it is new.
func (c *Consumer) handle(ctx context.Context, m *kafka.Message) {
	kind, _, ok := c.topics.Parse(*m.TopicPartition.Topic)
	if !ok {
		return
	}
	c.metrics.records.WithLabelValues(kind.String()).Inc()
	if !m.Timestamp.IsZero() {
		c.metrics.delay.Observe(time.Since(m.Timestamp).Seconds())
	}
	switch kind {
	case change.KindChat:
		ch, err := change.DecodeChat(m.Value)
		if err != nil {
			c.malformed(m, err)
			return
		}
		if c.putChat(ctx, ch) {
			c.metrics.pushed.WithLabelValues(kind.String()).Inc()
			if ch.Type == change.ChatDelete {
				c.notify.ChatDeleted(ch.ID)
			} else {
				c.notify.ChatCreated(ch.ID)
			}
		}
	default:
		msg, err := change.DecodeMessage(m.Value)
		if err != nil {
			c.malformed(m, err)
			return
		}
		if c.putMessage(ctx, msg) {
			c.lag.Cached(msg)
			c.metrics.pushed.WithLabelValues(kind.String()).Inc()
			c.notify.MessageChanged(msg)
		}
	}
}

// malformed counts and logs a record the writer dead-letters; nothing here
// can show it.
func (c *Consumer) malformed(m *kafka.Message, err error) {
	c.metrics.malformed.Inc()
	c.log.Warn("skipped a malformed record (the writer dead-letters it)",
		"topic", *m.TopicPartition.Topic, "partition", m.TopicPartition.Partition, "offset", m.TopicPartition.Offset, "err", err)
}

// putMessage reports whether m is newer than what this instance pushed
// (see decide).
func (c *Consumer) putMessage(ctx context.Context, m change.Message) bool {
	return c.decide(ctx, c.mem.PutMessage(m), func(ctx context.Context) (cache.Result, error) {
		return c.cache.PutMessage(ctx, m)
	})
}

// putChat reports whether ch is newer than what this instance pushed.
func (c *Consumer) putChat(ctx context.Context, ch change.Chat) bool {
	return c.decide(ctx, c.mem.PutChat(ch), func(ctx context.Context) (cache.Result, error) {
		return c.cache.PutChat(ctx, ch)
	})
}

// decide says whether a change is new, given memNew (memory's answer, which
// memory has already recorded) and put (Redis's compare-and-set): new if
// Redis stored it (Redis remembers across restarts of the instance) and
// memory did not know a newer version (memory remembers across a Redis
// restarted empty, which would take a late duplicate of an older version
// for new). While Redis is down, memory alone decides.
func (c *Consumer) decide(ctx context.Context, memNew bool, put func(context.Context) (cache.Result, error)) bool {
	if c.redisDown.Load() {
		return memNew
	}
	cctx, cancel := context.WithTimeout(ctx, cacheTimeout)
	defer cancel()
	r, err := put(cctx)
	if err != nil {
		c.redisFailed(err)
		return memNew
	}
	return r.Applied() && memNew
}

func (c *Consumer) redisFailed(err error) {
	if !c.redisDown.Swap(true) {
		c.metrics.redisDown.Set(1)
		c.log.Warn("Redis unavailable: pushing by the versions in memory until it is back", "err", err)
	}
	c.lastPing = time.Now()
}

// checkRedis pings a Redis that is down, at most every redisRetry; when it
// answers, it writes memory back (newest versions win there too) before
// Redis decides again.
func (c *Consumer) checkRedis(ctx context.Context) {
	if !c.redisDown.Load() || time.Since(c.lastPing) < redisRetry {
		return
	}
	c.lastPing = time.Now()
	pctx, cancel := context.WithTimeout(ctx, cacheTimeout)
	err := c.cache.Ping(pctx)
	cancel()
	if err != nil {
		return
	}
	msgs, chats := c.mem.All()
	if err := c.rebuild(ctx, msgs, chats); err != nil {
		c.log.Warn("rebuild the Redis cache", "err", err)
		return
	}
	c.redisDown.Store(false)
	c.metrics.redisDown.Set(0)
	c.log.Info("Redis is back; cache rebuilt from memory", "messages", len(msgs), "chats", len(chats))
}

func (c *Consumer) rebuild(ctx context.Context, msgs []change.Message, chats []change.Chat) error {
	for _, m := range msgs {
		if _, err := c.cache.PutMessage(ctx, m); err != nil {
			return err
		}
	}
	for _, ch := range chats {
		if _, err := c.cache.PutChat(ctx, ch); err != nil {
			return err
		}
	}
	return nil
}

// Metrics are the live path's Prometheus metrics.
type Metrics struct {
	records      *prometheus.CounterVec
	pushed       *prometheus.CounterVec
	malformed    prometheus.Counter
	delay        prometheus.Histogram
	redisDown    prometheus.Gauge
	kafkaErrors  prometheus.Counter
	kafkaDown    prometheus.Gauge
	commitErrors prometheus.Counter
}

// NewMetrics registers the live path's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "internal_live_records_total", Help: "Change records consumed, by kind.",
		}, []string{"kind"}),
		pushed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "internal_live_pushed_total", Help: "Changes newer than any seen before, pushed to WebSocket subscribers, by kind.",
		}, []string{"kind"}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "internal_live_malformed_total", Help: "Records skipped as malformed (the writer dead-letters them).",
		}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "internal_live_record_delay_seconds", Help: "From a record's Kafka timestamp to its handling here.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		redisDown: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "internal_redis_down", Help: "1 while Redis is unavailable and memory decides what is new.",
		}),
		kafkaErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "internal_kafka_errors_total", Help: "Errors the Kafka client reported and retries by itself.",
		}),
		kafkaDown: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "internal_kafka_unreachable", Help: "1 while the live consumer's Kafka cluster is unreachable.",
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "internal_kafka_commit_errors_total", Help: "Offset commits of the live consumer that failed (retried at the next commit).",
		}),
	}
	reg.MustRegister(m.records, m.pushed, m.malformed, m.delay, m.redisDown, m.kafkaErrors, m.kafkaDown, m.commitErrors)
	return m
}
