package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/feed"
	"github.com/chatpoc/chat-poc/internal/kafkaclient"
)

// Timing of the writer.
const (
	// applyTimeout bounds one batch's transaction. Shutdown does not cancel
	// a transaction in flight: SIGTERM finishes the batch.
	applyTimeout = 30 * time.Second
	// pollIdle is how long one Poll waits when no batch is open, so the loop
	// notices shutdown and refreshes the lag gauges.
	pollIdle = 100 * time.Millisecond
	// retryMax caps the backoff between attempts to reach Postgres after a
	// failed batch.
	retryMax = 5 * time.Second
	// maxRecordBytes bounds a record's value: a larger one is dead-lettered
	// unparsed (a message's content is at most change.MaxContentBytes).
	maxRecordBytes = 256 << 10
	// shutdownApplyTimeout bounds the open batch's transaction on shutdown
	// (a batch that does not make it is read again by the next owner).
	shutdownApplyTimeout = 5 * time.Second
	// closeTimeout bounds closing the consumer (leaving the group).
	closeTimeout = 5 * time.Second
	// batchMaxBytes bounds the record bytes an open batch holds (with
	// Options.BatchMax records): 1,000 records of up to maxRecordBytes
	// would be 256 MiB; a batch this large is flushed at once.
	batchMaxBytes = 16 << 20
	// maxIsolations bounds the rounds of finding and dead-lettering records
	// Postgres refuses in one batch. One round finds every record refused on
	// its own; another is needed only when removing one exposes an older
	// version of the same record in the batch.
	maxIsolations = 3
)

// Options configure a Writer.
type Options struct {
	// Group is the Kafka consumer group.
	Group string
	// Cluster names the Kafka cluster consumed: offsets are stored in
	// Postgres per group and cluster (Group@Cluster), since both regions'
	// writers write to the same database and each cluster numbers its
	// partitions' offsets its own way.
	Cluster string
	// MessageTopic and ChatTopic are the topics of message and chat
	// records; their MirrorMaker 2 copies ("b.chat-messages") are read too.
	MessageTopic, ChatTopic string
	// BatchMax is the most records one transaction writes.
	BatchMax int
	// Linger is the longest a record waits for more to join its batch.
	Linger time.Duration
}

// partitionKey names a partition of the consumed cluster.
type partitionKey struct {
	topic     string
	partition int32
}

func (k partitionKey) String() string { return fmt.Sprintf("%s[%d]", k.topic, k.partition) }

// MarshalText names the partition in logs.
func (k partitionKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Writer consumes change records and applies them to the internal database
// in batches, with each batch's partition offsets in the same transaction.
// Postgres holds the offsets the writer resumes from; Kafka's committed
// offsets are a copy for tools (lag in a Kafka UI), never read back.
//
// One goroutine (Run) owns the consumer and all of the writer's state; the
// rebalance callback runs on it, inside Poll.
type Writer struct {
	consumer     *kafka.Consumer
	logs         logChecker
	db           *chatdb.DB
	dlq          *deadLetters
	opts         Options
	offsetsGroup string
	topics       change.Topics
	metrics      *metrics
	log          *slog.Logger

	ctx    context.Context // Run's: ends the retry loops on shutdown
	parts  map[partitionKey]*partition
	batch  batch
	failed bool // Postgres failed since the last good batch: log the recovery
	outage *kafkaclient.Outage

	// durable is, for the partitions with records read and not yet
	// committed to Postgres, the offset Postgres holds: what the watchdog
	// measures progress by (Durable), from its own goroutine.
	durableMu sync.Mutex
	durable   map[kafkaclient.Partition]int64
}

// partition is an assigned partition's state.
type partition struct {
	// stored is the offset the writer believes Postgres holds for the
	// partition (chatdb.NoOffset: none): the From of its next advance.
	stored int64
	// consumed is one past the last record read, for the lag gauge.
	consumed int64
	// topicID is the Kafka ID of the topic as the writer found it when the
	// partition was assigned ("" if unknown), stored with its offsets.
	topicID string
	// stopped, if not nil, says why the partition is paused: its stored
	// offset does not belong to its log (ErrLogMismatch).
	stopped error
}

// batch is what the next transaction writes.
type batch struct {
	messages []change.Message
	chats    []change.Chat
	// msgSrc and chatSrc are the records messages and chats were decoded
	// from, index for index: what a refused one's dead letter carries.
	msgSrc  []*kafka.Message
	chatSrc []*kafka.Message
	bytes   int                    // the records' value bytes, dead ones included
	ends    map[partitionKey]int64 // one past each partition's last record
	stamps  []time.Time            // the records' Kafka timestamps
	dead    []deadLetter           // dead-lettered records, produced but maybe not yet acknowledged
	size    int                    // records, dead ones included
	opened  time.Time              // when the first record joined
}

func (b *batch) reset() {
	b.messages, b.chats, b.stamps, b.dead = b.messages[:0], b.chats[:0], b.stamps[:0], b.dead[:0]
	clear(b.msgSrc) // let the records go
	clear(b.chatSrc)
	b.msgSrc, b.chatSrc = b.msgSrc[:0], b.chatSrc[:0]
	clear(b.ends)
	b.size, b.bytes = 0, 0
}

// NewWriter returns a writer that reads with consumer, which must be
// created by newConsumer (manual offsets, cooperative rebalancing) and not
// yet subscribed, writes to db and dead-letters to dlq.
func NewWriter(consumer *kafka.Consumer, db *chatdb.DB, dlq *deadLetters, opts Options, m *metrics, log *slog.Logger) (*Writer, error) {
	admin, err := kafka.NewAdminClientFromConsumer(consumer)
	if err != nil {
		return nil, fmt.Errorf("writer: admin client: %w", err)
	}
	switch {
	case opts.Group == "" || opts.Cluster == "":
		return nil, errors.New("writer: group and cluster are required")
	case opts.MessageTopic == "" || opts.ChatTopic == "" || opts.MessageTopic == opts.ChatTopic:
		return nil, errors.New("writer: two distinct topics are required")
	case opts.BatchMax < 1:
		return nil, fmt.Errorf("writer: batch size %d: want at least 1", opts.BatchMax)
	case opts.Linger < 0:
		return nil, fmt.Errorf("writer: linger %s: want at least 0", opts.Linger)
	}
	return &Writer{
		consumer:     consumer,
		logs:         logChecker{admin: admin},
		db:           db,
		dlq:          dlq,
		opts:         opts,
		offsetsGroup: opts.Group + "@" + opts.Cluster,
		topics:       change.NewTopics(opts.MessageTopic, opts.ChatTopic),
		metrics:      m,
		log:          log,
		parts:        map[partitionKey]*partition{},
		batch:        batch{ends: map[partitionKey]int64{}},
		outage:       kafkaclient.NewOutage(log, m.kafkaDown),
		durable:      map[kafkaclient.Partition]int64{},
	}, nil
}

// Outage tracks the consumer's Kafka outages.
func (w *Writer) Outage() *kafkaclient.Outage { return w.outage }

// Durable returns the partitions whose records were read and are not yet
// committed to Postgres, with the offset Postgres holds for each (see
// kafkaclient.ProgressOptions.Durable). Safe for concurrent use.
func (w *Writer) Durable() map[kafkaclient.Partition]int64 {
	w.durableMu.Lock()
	defer w.durableMu.Unlock()
	return maps.Clone(w.durable)
}

// setDurable records that k has records read beyond stored (>= 0), or,
// with done, that it has none.
func (w *Writer) setDurable(k partitionKey, stored int64, done bool) {
	w.durableMu.Lock()
	defer w.durableMu.Unlock()
	if done {
		delete(w.durable, kafkaclient.Partition{Topic: k.topic, Partition: k.partition})
		return
	}
	w.durable[kafkaclient.Partition{Topic: k.topic, Partition: k.partition}] = max(stored, 0)
}

// errUnknownTopic dead-letters a record of a topic that Kafka's regular
// expression matched and Go's does not (the two engines differ in corners).
var errUnknownTopic = errors.New("record of a topic the writer does not recognise")

// Run consumes until ctx ends, then applies the open batch, leaves the group
// and closes the consumer (each bounded). It returns an error only for a
// fatal Kafka error: the process must restart to get a new consumer.
func (w *Writer) Run(ctx context.Context) error {
	w.ctx = ctx
	defer w.close()
	// librdkafka takes a subscription starting with ^ as a regular
	// expression, and re-evaluates it as topics appear (mirrored ones too).
	if err := w.consumer.SubscribeTopics([]string{w.topics.Subscription()}, w.rebalance); err != nil {
		return fmt.Errorf("subscribe to %s: %w", w.topics.Subscription(), err)
	}
	w.log.Info("consuming", "topics", w.topics.Subscription(), "group", w.opts.Group, "offsets", w.offsetsGroup)
	lagEvery := time.NewTicker(time.Second)
	defer lagEvery.Stop()
	recheck := time.NewTicker(recheckEvery)
	defer recheck.Stop()
	for ctx.Err() == nil {
		wait := pollIdle
		if w.batch.size > 0 {
			wait = max(0, min(wait, w.opts.Linger-time.Since(w.batch.opened)))
		}
		switch e := w.consumer.Poll(int(wait.Milliseconds())).(type) {
		case *kafka.Message:
			w.outage.Reachable()
			w.add(e)
		case kafka.Error:
			if e.IsFatal() {
				// Logged here, not only when Run's caller gets it: the
				// close that follows may take its full timeout.
				w.log.Error("Kafka consumer failed fatally; stopping", "err", e)
				return kafkaclient.FatalError(e)
			}
			w.kafkaError(e)
		}
		if w.batch.size >= w.opts.BatchMax || w.batch.bytes >= batchMaxBytes ||
			(w.batch.size > 0 && time.Since(w.batch.opened) >= w.opts.Linger) {
			w.flush()
		}
		w.metrics.open.Set(float64(w.batch.size))
		select {
		case <-lagEvery.C:
			w.updateLag()
		case <-recheck.C:
			w.recheckStopped()
		default:
		}
	}
	w.log.Info("stopping: applying the open batch and leaving the group", "records", w.batch.size)
	w.flushWithin(shutdownApplyTimeout)
	return nil
}

// close leaves the group (the revoke runs w.rebalance, with nothing left to
// flush) and closes the consumer, giving up after closeTimeout.
func (w *Writer) close() {
	if !kafkaclient.CloseConsumer(w.consumer, closeTimeout) {
		w.log.Warn("Kafka consumer did not close in time; left closing", "timeout", closeTimeout)
	}
}

// kafkaError notes a client error that librdkafka retries by itself: an
// outage is logged when it begins (and when it ends), the rest at debug.
func (w *Writer) kafkaError(e kafka.Error) {
	w.metrics.kafkaErrors.Inc()
	switch e.Code() {
	case kafka.ErrAllBrokersDown:
		w.outage.ClientError(e)
		return
	case kafka.ErrAutoOffsetReset:
		// auto.offset.reset=error: a position outside its log stops the
		// partition's fetching instead of moving it to an end.
		w.offsetOutOfRange(e)
		return
	}
	w.log.Debug("Kafka client error", "err", e)
}

// add puts a record into the open batch, or dead-letters it.
func (w *Writer) add(m *kafka.Message) {
	k := partitionKey{*m.TopicPartition.Topic, m.TopicPartition.Partition}
	p, ok := w.parts[k]
	if !ok || p.stopped != nil {
		return // fetched before its partition was revoked or stopped
	}
	if w.batch.size == 0 {
		w.batch.opened = time.Now()
	}
	if _, open := w.batch.ends[k]; !open {
		w.setDurable(k, p.stored, false)
	}
	w.batch.size++
	w.batch.bytes += len(m.Value)
	w.batch.ends[k] = int64(m.TopicPartition.Offset) + 1
	p.consumed = int64(m.TopicPartition.Offset) + 1
	kd, base, known := w.topics.Parse(k.topic)
	err := errUnknownTopic
	if known {
		err = w.decode(kd, m)
	}
	if err != nil {
		w.batch.dead = append(w.batch.dead, w.dlq.send(m, kd, base, err))
		return
	}
	w.batch.stamps = append(w.batch.stamps, m.Timestamp)
}

// decode adds m's change to the batch, or says why it cannot be stored.
func (w *Writer) decode(kd change.Kind, m *kafka.Message) error {
	if len(m.Value) > maxRecordBytes {
		return fmt.Errorf("%w: record of %d bytes, more than %d", change.ErrInvalid, len(m.Value), maxRecordBytes)
	}
	switch kd {
	case change.KindChat:
		c, err := change.DecodeChat(m.Value)
		if err == nil {
			err = chatdb.CheckChat(c)
		}
		if err != nil {
			return err
		}
		w.batch.chats = append(w.batch.chats, c)
		w.batch.chatSrc = append(w.batch.chatSrc, m)
	default:
		msg, err := change.DecodeMessage(m.Value)
		if err == nil {
			err = chatdb.CheckMessage(msg)
		}
		if err != nil {
			return err
		}
		w.batch.messages = append(w.batch.messages, msg)
		w.batch.msgSrc = append(w.batch.msgSrc, m)
	}
	return nil
}

// flush applies the open batch: its dead letters acknowledged first, then
// its records and offsets in one transaction. On failure it drops the batch
// and rewinds every partition to its offset in Postgres.
func (w *Writer) flush() { w.flushWithin(applyTimeout) }

// flushWithin is flush with the transaction bounded by timeout.
func (w *Writer) flushWithin(timeout time.Duration) {
	b := &w.batch
	if b.size == 0 {
		return
	}
	defer b.reset()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), timeout)
	defer cancel()
	if err := w.dlq.await(ctx, b.dead); err != nil {
		w.rewind(fmt.Errorf("dead-letter %d records: %w", len(b.dead), err))
		return
	}
	advances := make([]chatdb.Advance, 0, len(b.ends))
	for _, k := range slices.SortedFunc(maps.Keys(b.ends), comparePartitions) {
		p := w.parts[k]
		advances = append(advances, chatdb.Advance{Topic: k.topic, Partition: k.partition, From: p.stored, To: b.ends[k], TopicID: p.topicID})
	}
	start := time.Now()
	applied, err := w.apply(ctx, advances)
	took := time.Since(start)
	if err != nil {
		w.rewind(err)
		return
	}
	if w.failed {
		w.log.Info("writing again", "records", b.size)
		w.failed = false
	}
	w.metrics.observeBatch(b, applied, took, time.Now())
	for _, d := range b.dead {
		w.log.Warn("dead-lettered a record", "topic", d.source.topic, "partition", d.source.partition,
			"offset", d.offset, "to", d.topic, "err", d.reason)
	}
	stored := make([]kafka.TopicPartition, 0, len(advances))
	for _, a := range advances {
		k := partitionKey{a.Topic, a.Partition}
		w.parts[k].stored = a.To
		w.setDurable(k, a.To, true)
		stored = append(stored, kafka.TopicPartition{Topic: &a.Topic, Partition: a.Partition, Offset: kafka.Offset(a.To)})
	}
	// The copy for tools; a partition revoked meanwhile is refused, harmlessly.
	_, _ = w.consumer.StoreOffsets(stored)
}

// apply writes the open batch with advances in one transaction. If
// Postgres refuses it for a reason retrying cannot fix, the records at
// fault are found, dead-lettered (acknowledged) and taken out, and the rest
// is written without them: a poison record never wedges its partition.
func (w *Writer) apply(ctx context.Context, advances []chatdb.Advance) (chatdb.Applied, error) {
	b := &w.batch
	for round := 1; ; round++ {
		applied, err := w.db.Apply(ctx, w.offsetsGroup, chatdb.Batch{Messages: b.messages, Chats: b.chats, Offsets: advances})
		if !errors.Is(err, chatdb.ErrRejected) || round > maxIsolations {
			return applied, err
		}
		if err := w.isolate(ctx, err); err != nil {
			return chatdb.Applied{}, err
		}
	}
}

// isolate finds the records of the open batch that Postgres refuses on
// their own (refused, the cause), sends them to their dead-letter topics with
// Postgres's reason, waits for Kafka to acknowledge them and takes them out
// of the batch.
func (w *Writer) isolate(ctx context.Context, refused error) error {
	b := &w.batch
	rejections, err := w.db.Rejections(ctx, chatdb.Batch{Messages: b.messages, Chats: b.chats})
	if err != nil {
		return err
	}
	if len(rejections) == 0 {
		return fmt.Errorf("no record of the batch is refused on its own: %w", refused)
	}
	dead := make([]deadLetter, 0, len(rejections))
	drop := map[change.Kind]map[int]bool{change.KindMessage: {}, change.KindChat: {}}
	for _, r := range rejections {
		src := b.msgSrc
		if r.Kind == change.KindChat {
			src = b.chatSrc
		}
		m := src[r.Index]
		_, base, _ := w.topics.Parse(*m.TopicPartition.Topic)
		dead = append(dead, w.dlq.send(m, r.Kind, base, r.Err))
		drop[r.Kind][r.Index] = true
	}
	if err := w.dlq.await(ctx, dead); err != nil {
		return fmt.Errorf("dead-letter %d records Postgres refused: %w", len(dead), err)
	}
	b.dead = append(b.dead, dead...)
	b.messages, b.msgSrc = without(b.messages, b.msgSrc, drop[change.KindMessage])
	b.chats, b.chatSrc = without(b.chats, b.chatSrc, drop[change.KindChat])
	return nil
}

// without returns items and their sources without the indexes in drop.
func without[T any](items []T, src []*kafka.Message, drop map[int]bool) ([]T, []*kafka.Message) {
	keptItems, keptSrc := items[:0], src[:0]
	for i := range items {
		if !drop[i] {
			keptItems, keptSrc = append(keptItems, items[i]), append(keptSrc, src[i])
		}
	}
	clear(src[len(keptSrc):])
	return keptItems, keptSrc
}

// rewind handles a failed batch: the batch is dropped and every assigned
// partition is sought back to the offset Postgres holds, so its records are
// read again — after a lost connection, a Postgres failover that lost the
// last commits, or a rebalance that let another writer store further.
func (w *Writer) rewind(cause error) {
	w.metrics.rewinds.Inc()
	switch {
	case errors.Is(cause, chatdb.ErrOffsetMoved):
		w.log.Info("stored offsets moved; reading again from Postgres's", "err", cause)
	case !w.failed:
		w.log.Warn("batch failed; reading again from the offsets in Postgres", "err", cause)
		w.failed = true
	}
	w.batch.reset()
	keys := slices.SortedFunc(maps.Keys(w.parts), comparePartitions)
	stored, ok := w.loadOffsets(keys)
	if !ok {
		return // shutting down
	}
	seeks := make([]kafka.TopicPartition, 0, len(keys))
	for _, k := range keys {
		p := w.parts[k]
		p.stored = stored[k].Next
		if p.stopped == nil {
			seeks = append(seeks, topicPartition(k, p.stored))
		}
	}
	if len(seeks) == 0 {
		return
	}
	res, err := w.consumer.SeekPartitions(seeks)
	if err == nil {
		for _, tp := range res {
			err = errors.Join(err, tp.Error)
		}
	}
	if err != nil {
		// Without the seek the partitions' next advances will not start at
		// the stored offsets, fail with ErrOffsetMoved, and seek again.
		w.log.Warn("seek to the stored offsets", "err", err)
	}
}

// loadOffsets reads the stored offsets of keys, retrying with capped
// backoff while Postgres is unreachable. It returns false if Run's context
// ended first.
func (w *Writer) loadOffsets(keys []partitionKey) (map[partitionKey]chatdb.Offset, bool) {
	backoff := feed.Backoff{Initial: 100 * time.Millisecond, Max: retryMax}
	for logged := false; ; {
		ctx, cancel := context.WithTimeout(w.ctx, applyTimeout)
		offsets, err := w.db.Offsets(ctx, w.offsetsGroup)
		cancel()
		if err == nil {
			return storedOffsets(keys, offsets), true
		}
		if w.ctx.Err() != nil {
			return nil, false
		}
		if !logged {
			w.log.Warn("Postgres unreachable; retrying", "err", err)
			w.failed, logged = true, true
		}
		select {
		case <-w.ctx.Done():
			return nil, false
		case <-time.After(backoff.Next()):
		}
	}
}

// rebalance is the consumer group's rebalance callback (cooperative: it
// gets only the partitions that move). Assigned partitions start at their
// offsets in Postgres; revoked ones get the open batch applied first, so
// their next owner starts where this writer stopped.
func (w *Writer) rebalance(c *kafka.Consumer, ev kafka.Event) error {
	switch e := ev.(type) {
	case kafka.AssignedPartitions:
		keys := make([]partitionKey, len(e.Partitions))
		for i, tp := range e.Partitions {
			keys[i] = partitionKey{*tp.Topic, tp.Partition}
		}
		stored, ok := w.loadOffsets(keys)
		if !ok {
			return w.ctx.Err()
		}
		states := w.logStates(keys)
		tps := make([]kafka.TopicPartition, len(keys))
		var stop []kafka.TopicPartition
		for i, k := range keys {
			o := stored[k]
			p := &partition{stored: o.Next, consumed: max(o.Next, 0), topicID: cmp.Or(states[k].topicID, o.TopicID)}
			w.parts[k] = p
			tps[i] = topicPartition(k, o.Next)
			if err := mismatch(k, o, states[k]); err != nil {
				w.stop(p, err)
				stop = append(stop, tps[i])
			}
		}
		w.log.Info("partitions assigned", "partitions", keys, "owned", len(w.parts))
		w.metrics.assigned.Set(float64(len(w.parts)))
		if err := c.IncrementalAssign(tps); err != nil {
			return err
		}
		if len(stop) == 0 {
			return nil
		}
		return c.Pause(stop)
	case kafka.RevokedPartitions:
		if c.AssignmentLost() {
			// Another writer may own them already; the offsets' compare-
			// and-set makes whichever batch comes second read again.
			w.log.Warn("partitions lost (session timed out)", "partitions", len(e.Partitions))
		}
		w.flush()
		for _, tp := range e.Partitions {
			k := partitionKey{*tp.Topic, tp.Partition}
			delete(w.parts, k)
			w.setDurable(k, 0, true)
			w.countStopped()
			w.metrics.forget(k)
		}
		w.log.Info("partitions revoked", "partitions", len(e.Partitions), "owned", len(w.parts))
		w.metrics.assigned.Set(float64(len(w.parts)))
		return c.IncrementalUnassign(e.Partitions)
	}
	return nil
}

// updateLag sets the lag gauges from the high watermarks the consumer last
// fetched.
func (w *Writer) updateLag() {
	for k, p := range w.parts {
		_, high, err := w.consumer.GetWatermarkOffsets(k.topic, k.partition)
		if err != nil || high < 0 {
			continue
		}
		w.metrics.lag(k, max(0, high-p.consumed))
	}
}

// topicPartition is k positioned at stored, or at its beginning when no
// offset is stored (a new database reads every record Kafka still has).
func topicPartition(k partitionKey, stored int64) kafka.TopicPartition {
	off := kafka.OffsetBeginning
	if stored != chatdb.NoOffset {
		off = kafka.Offset(stored)
	}
	return kafka.TopicPartition{Topic: &k.topic, Partition: k.partition, Offset: off}
}

func comparePartitions(a, b partitionKey) int {
	if c := strings.Compare(a.topic, b.topic); c != 0 {
		return c
	}
	return int(a.partition - b.partition)
}
