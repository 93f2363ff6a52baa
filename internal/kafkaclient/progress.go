package kafkaclient

import (
	"context"
	"fmt"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Progress measures a consumer's progress for a watchdog (see
// watchdog.Probe): a partition whose committed end (the last stable offset,
// what a read_committed consumer can read) is ahead of the consumer's
// position, with the position not moving, has been stalled since the
// position last moved. librdkafka's position moves past transaction markers
// and aborted records too, so a consumer that is caught up sits exactly at
// the committed end.
//
// The committed ends come from an admin client of Progress's own, on
// connections of its own: a consumer that is wedged (or whose connections
// are) cannot make the probe that watches it look healthy.
type Progress struct {
	consumer *kafka.Consumer
	admin    *kafka.AdminClient
	opts     ProgressOptions

	parts map[Partition]*partitionProgress // only the watchdog's goroutine uses it
}

// Partition names a topic's partition.
type Partition struct {
	Topic     string
	Partition int32
}

type partitionProgress struct {
	pos    int64     // position as last seen (or the committed end when first seen unassigned)
	moved  time.Time // when pos last moved, or records were first seen waiting since it was at the end
	behind bool      // the last probe saw records waiting
}

// ProgressOptions configure a Progress.
type ProgressOptions struct {
	// Bootstrap and ClientID are the probe's own admin client's.
	Bootstrap, ClientID string
	// Match says which topics are consumed.
	Match func(topic string) bool
	// All: every partition of the matching topics is expected to be
	// assigned to this consumer (a group of one, as each internal
	// instance's), so a partition that is not, and receives records, is
	// stalled too. Without it only the consumer's assignment is watched (a
	// writer shares its partitions with its group).
	All bool
	// Outage, if not nil, is told when the consumer's own client answers
	// again.
	Outage *Outage
	// Polled, if not nil, returns when the consumer's loop last polled
	// (or otherwise showed it is alive): a loop that stopped is stalled
	// since then, whatever its partitions look like (a partition with
	// nothing new shows no stall, and a loop stuck in its handling of a
	// record stops nothing else).
	Polled func() time.Time
	// Durable, if not nil, returns the partitions whose records the
	// consumer has read but not yet made durable (a writer's batch not yet
	// committed to Postgres), each with the offset up to which its work is
	// durable: there, that offset is the consumer's position. Called from
	// the watchdog's goroutine.
	Durable func() map[Partition]int64
}

// NewProgress returns the progress of consumer as opts say, probed by an
// admin client of its own.
func NewProgress(consumer *kafka.Consumer, opts ProgressOptions) (*Progress, error) {
	admin, err := kafka.NewAdminClient(&kafka.ConfigMap{
		"bootstrap.servers": opts.Bootstrap,
		"client.id":         opts.ClientID,
		// An admin client cannot forward its log to ours, and would write
		// a line to stderr at every reconnect during an outage; the probe's
		// errors are returned (and counted by the watchdog) instead.
		"log_level": 0,
	})
	if err != nil {
		return nil, fmt.Errorf("progress probe's admin client: %w", err)
	}
	return &Progress{consumer: consumer, admin: admin, opts: opts, parts: map[Partition]*partitionProgress{}}, nil
}

// pollGrace is how long a consumer's loop may go without polling before
// the probe counts it as stalled (it polls every 100 ms or so; a record's
// handling is bounded well below this).
const pollGrace = 5 * time.Second

// closeTimeout bounds closing the probe's admin client.
const closeTimeout = 2 * time.Second

// Close closes the probe's admin client (within closeTimeout: it must not
// hold a shutdown while its cluster is unreachable).
func (p *Progress) Close() { closeBounded(p.admin.Close, closeTimeout) }

// Probe is a watchdog.Probe.
func (p *Progress) Probe(ctx context.Context) (time.Duration, string, error) {
	if p.opts.Outage != nil && p.opts.Outage.Down() {
		// The consumer's own client: is it connected again? (A short
		// metadata request on its connections.)
		if _, err := p.consumer.GetMetadata(nil, false, 1000); err == nil {
			p.opts.Outage.Reachable()
		}
	}

	var loop time.Duration
	var loopWhat string
	if p.opts.Polled != nil {
		if last := p.opts.Polled(); !last.IsZero() && time.Since(last) > pollGrace {
			loop = time.Since(last)
			loopWhat = fmt.Sprintf("the consumer has not polled for %s", loop.Round(time.Second))
		}
	}

	positions := map[Partition]int64{}
	assigned, err := p.consumer.Assignment()
	if err != nil {
		return 0, "", fmt.Errorf("consumer assignment: %w", err)
	}
	if len(assigned) > 0 {
		pos, err := p.consumer.Position(assigned)
		if err != nil {
			return 0, "", fmt.Errorf("consumer position: %w", err)
		}
		for _, tp := range pos {
			positions[Partition{*tp.Topic, tp.Partition}] = int64(tp.Offset) // kafka.OffsetInvalid (< 0) until known
		}
	}

	watched := map[kafka.TopicPartition]kafka.OffsetSpec{}
	if p.opts.All {
		md, err := p.admin.GetMetadata(nil, true, timeoutMs(ctx))
		if err != nil {
			return 0, "", fmt.Errorf("metadata: %w", err)
		}
		for name, t := range md.Topics {
			if !p.opts.Match(name) || t.Error.Code() != kafka.ErrNoError {
				continue
			}
			for _, pm := range t.Partitions {
				watched[kafka.TopicPartition{Topic: &name, Partition: pm.ID}] = kafka.LatestOffsetSpec
			}
		}
	} else {
		for _, tp := range assigned {
			watched[kafka.TopicPartition{Topic: tp.Topic, Partition: tp.Partition}] = kafka.LatestOffsetSpec
		}
	}
	if p.opts.Durable != nil {
		for k, off := range p.opts.Durable() {
			if _, ok := positions[k]; ok {
				positions[k] = off
			}
		}
	}
	if len(watched) == 0 {
		clear(p.parts)
		return loop, loopWhat, nil
	}
	res, err := p.admin.ListOffsets(ctx, watched, kafka.SetAdminIsolationLevel(kafka.IsolationLevelReadCommitted))
	if err != nil {
		return 0, "", fmt.Errorf("list committed ends: %w", err)
	}

	now := time.Now()
	seen := map[Partition]bool{}
	worst, what := loop, loopWhat
	for tp, info := range res.ResultInfos {
		if info.Error.Code() != kafka.ErrNoError || info.Offset < 0 {
			continue
		}
		k := Partition{*tp.Topic, tp.Partition}
		seen[k] = true
		end := int64(info.Offset)
		pos, known := positions[k]
		st := p.parts[k]
		switch {
		case st == nil && (!known || pos < 0):
			// First seen with no position: what is there now is history
			// (the consumer starts at the end, or resumes where it was);
			// only records written from now on count.
			st = &partitionProgress{pos: end, moved: now}
		case st == nil:
			st = &partitionProgress{pos: pos, moved: now}
		case known && pos >= 0 && pos != st.pos:
			st.pos, st.moved = pos, now
		}
		p.parts[k] = st
		if st.pos >= end {
			st.behind = false
			continue
		}
		if !st.behind {
			// Records waiting, first seen now: the stall is counted from
			// here (they arrived at most one probe interval earlier).
			st.behind, st.moved = true, now
		}
		if d := now.Sub(st.moved); d > worst {
			worst = d
			state := fmt.Sprintf("position %d", st.pos)
			switch {
			case !known:
				state = "not assigned to this consumer"
			case pos < 0:
				state = "no position yet"
			}
			what = fmt.Sprintf("%s[%d]: %s, committed end %d", k.Topic, k.Partition, state, end)
		}
	}
	for k := range p.parts {
		if !seen[k] {
			delete(p.parts, k)
		}
	}
	return worst, what, nil
}
