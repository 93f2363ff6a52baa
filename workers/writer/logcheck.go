package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// Timing of the checks of stored offsets against the logs.
const (
	// logCheckTimeout bounds one check's two admin requests (topic IDs and
	// log bounds). A check that times out stops nothing.
	logCheckTimeout = 5 * time.Second
	// recheckEvery is how often a stopped partition's stored offset is read
	// again from Postgres and checked: an operator who deleted it (see
	// README, "A partition the writer stopped") sees the writer resume
	// within this long, without a restart.
	recheckEvery = 10 * time.Second
)

// ErrLogMismatch is wrapped by the reason a partition is stopped: its
// stored offset does not belong to the log Kafka has under its name.
var ErrLogMismatch = errors.New("stored offset does not match the partition's log")

// logState is what Kafka says of a partition's log.
type logState struct {
	topicID   string // "" if the describe failed
	low, high int64  // the log's first offset and end; -1 if unknown
}

// logChecker asks Kafka for the topic IDs and log bounds of partitions.
type logChecker struct {
	admin *kafka.AdminClient
}

// states returns what Kafka says of keys' logs. A part it could not learn
// is left unknown (empty ID, bounds -1): the check then passes on it.
func (lc logChecker) states(ctx context.Context, keys []partitionKey) (map[partitionKey]logState, error) {
	ctx, cancel := context.WithTimeout(ctx, logCheckTimeout)
	defer cancel()
	out := make(map[partitionKey]logState, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	var topics []string
	for _, k := range keys {
		out[k] = logState{low: -1, high: -1}
		if !slices.Contains(topics, k.topic) {
			topics = append(topics, k.topic)
		}
	}
	var errs []error
	ids := map[string]string{}
	desc, err := lc.admin.DescribeTopics(ctx, kafka.NewTopicCollectionOfTopicNames(topics))
	if err != nil {
		errs = append(errs, fmt.Errorf("describe %d topics: %w", len(topics), err))
	}
	for _, d := range desc.TopicDescriptions {
		if d.Error.Code() == kafka.ErrNoError {
			ids[d.Name] = d.TopicID.String()
		}
	}
	bounds := func(spec kafka.OffsetSpec, set func(*logState, int64)) {
		req := make(map[kafka.TopicPartition]kafka.OffsetSpec, len(keys))
		for _, k := range keys {
			req[kafka.TopicPartition{Topic: &k.topic, Partition: k.partition}] = spec
		}
		res, err := lc.admin.ListOffsets(ctx, req)
		if err != nil {
			errs = append(errs, fmt.Errorf("list offsets of %d partitions: %w", len(keys), err))
			return
		}
		for tp, info := range res.ResultInfos {
			k := partitionKey{*tp.Topic, tp.Partition}
			if st, ok := out[k]; ok && info.Error.Code() == kafka.ErrNoError {
				set(&st, int64(info.Offset))
				out[k] = st
			}
		}
	}
	bounds(kafka.EarliestOffsetSpec, func(st *logState, o int64) { st.low = o })
	bounds(kafka.LatestOffsetSpec, func(st *logState, o int64) { st.high = o })
	for k, st := range out {
		st.topicID = ids[k.topic]
		out[k] = st
	}
	return out, errors.Join(errs...)
}

// mismatch says why stored, a partition's offset in Postgres, cannot be
// read from the log st describes, or returns nil if it can:
//   - the topic's ID is not the one stored with the offset: the topic was
//     deleted and created again, and its offsets started again at 0, so the
//     stored offset would skip records of the new log or read others twice;
//   - the offset is past the log's end: the same, or a cluster rebuilt;
//   - the offset is before the log's start: records were deleted
//     (retention) before the writer stored them.
//
// A partition with no stored offset always matches (it is read from its
// start).
func mismatch(k partitionKey, stored chatdb.Offset, st logState) error {
	if stored.Next == chatdb.NoOffset {
		return nil
	}
	switch {
	case stored.TopicID != "" && st.topicID != "" && stored.TopicID != st.topicID:
		return fmt.Errorf("%w: %s: the topic was created again (its ID is %s; the offset %d in Postgres is of the topic with ID %s)",
			ErrLogMismatch, k, st.topicID, stored.Next, stored.TopicID)
	case st.high >= 0 && stored.Next > st.high:
		return fmt.Errorf("%w: %s: the offset in Postgres, %d, is past the log's end, %d (topic created again or cluster rebuilt)",
			ErrLogMismatch, k, stored.Next, st.high)
	case st.low >= 0 && stored.Next < st.low:
		return fmt.Errorf("%w: %s: the log starts at %d, after the offset in Postgres, %d: records %d to %d were deleted before they were written",
			ErrLogMismatch, k, st.low, stored.Next, stored.Next, st.low-1)
	}
	return nil
}

// storedOffsets returns the offsets of keys among offsets, with Next
// NoOffset for a partition that has none.
func storedOffsets(keys []partitionKey, offsets []chatdb.Offset) map[partitionKey]chatdb.Offset {
	stored := make(map[partitionKey]chatdb.Offset, len(keys))
	for _, k := range keys {
		stored[k] = chatdb.Offset{Topic: k.topic, Partition: k.partition, Next: chatdb.NoOffset}
	}
	for _, o := range offsets {
		if k := (partitionKey{o.Topic, o.Partition}); slices.Contains(keys, k) {
			stored[k] = o
		}
	}
	return stored
}

// logStates asks Kafka about keys' logs; what it cannot learn is unknown
// (and checks pass on it), with a warning.
func (w *Writer) logStates(keys []partitionKey) map[partitionKey]logState {
	states, err := w.logs.states(w.ctx, keys)
	if err != nil {
		w.log.Warn("could not check the stored offsets against the logs; checking what was learnt", "err", err)
	}
	return states
}

// stop marks p stopped for err, an ErrLogMismatch; the caller pauses it.
// Nothing of the partition is read until recheckStopped finds its stored
// offset matching its log again.
func (w *Writer) stop(p *partition, err error) {
	p.stopped = err
	w.log.Error("partition stopped: its offset in Postgres does not match its log; nothing is read from it until an operator resets the offset (README: \"A partition the writer stopped\")",
		"err", err, "group", w.offsetsGroup)
	w.countStopped()
}

// countStopped sets the stopped-partitions gauge.
func (w *Writer) countStopped() {
	n := 0
	for _, p := range w.parts {
		if p.stopped != nil {
			n++
		}
	}
	w.metrics.stopped.Set(float64(n))
}

// offsetOutOfRange handles librdkafka's report that a partition's position
// is outside its log (auto.offset.reset=error: it stopped fetching it). The
// partitions whose stored offsets do not match their logs are stopped; the
// others, and the batch, are read again from Postgres's offsets.
func (w *Writer) offsetOutOfRange(e kafka.Error) {
	var keys []partitionKey
	for k, p := range w.parts {
		if p.stopped == nil {
			keys = append(keys, k)
		}
	}
	states := w.logStates(keys)
	var stop []kafka.TopicPartition
	for _, k := range keys {
		p := w.parts[k]
		if err := mismatch(k, chatdb.Offset{Next: p.stored, TopicID: p.topicID}, states[k]); err != nil {
			w.stop(p, err)
			stop = append(stop, topicPartition(k, p.stored))
		}
	}
	if len(stop) > 0 {
		if err := w.consumer.Pause(stop); err != nil {
			w.log.Warn("pause stopped partitions", "err", err)
		}
	}
	w.rewind(fmt.Errorf("a position outside its log: %w", e))
}

// recheckStopped reads the stored offsets of the stopped partitions again
// and resumes those that now match their logs (an operator deleted the
// offset, so the partition is read from its start, or set it).
func (w *Writer) recheckStopped() {
	var keys []partitionKey
	for k, p := range w.parts {
		if p.stopped != nil {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(w.ctx, applyTimeout)
	offsets, err := w.db.Offsets(ctx, w.offsetsGroup)
	cancel()
	if err != nil {
		return // the next tick tries again
	}
	stored := storedOffsets(keys, offsets)
	states := w.logStates(keys)
	var resume []kafka.TopicPartition
	for _, k := range keys {
		if mismatch(k, stored[k], states[k]) != nil {
			continue
		}
		p := w.parts[k]
		p.stored, p.consumed, p.stopped = stored[k].Next, max(stored[k].Next, 0), nil
		p.topicID = cmp.Or(states[k].topicID, stored[k].TopicID)
		resume = append(resume, topicPartition(k, p.stored))
		w.log.Info("partition resumed: its offset in Postgres matches its log", "partition", k, "offset", p.stored)
	}
	if len(resume) == 0 {
		return
	}
	w.countStopped()
	// Assigned again rather than sought: librdkafka stopped fetching them
	// when their position was out of range, and a new assignment starts a
	// partition's fetcher afresh at the given offset.
	err = errors.Join(w.consumer.IncrementalUnassign(resume), w.consumer.IncrementalAssign(resume), w.consumer.Resume(resume))
	if err != nil {
		w.log.Warn("resume partitions", "err", err)
	}
}
