package publisher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Pacing of the commit confirmation's ListOffsets queries: the coordinator
// writes the commit markers right after it acknowledged the commit, so the
// first query usually confirms; the later ones back off.
const (
	confirmFirstDelay = 2 * time.Millisecond
	confirmMaxDelay   = 100 * time.Millisecond
)

// errUnconfirmed marks a commit the cluster acknowledged whose records did
// not become visible to read_committed consumers within OperationTimeout.
var errUnconfirmed = errors.New("commit acknowledged but not visible to read_committed consumers")

// partition names one partition of a topic.
type partition struct {
	topic string
	id    int32
}

func (p partition) String() string { return fmt.Sprintf("%s[%d]", p.topic, p.id) }

// batchEnds holds, for each partition a batch's records were delivered
// to, the batch's last offset there and the last stable offset seen (-1
// before any); confirm removes each partition once it is past the batch.
type batchEnds map[partition]stable

// stable is one partition of batchEnds.
type stable struct {
	last, stable kafka.Offset
}

// add records that a record of the batch was delivered at tp.
func (u batchEnds) add(tp kafka.TopicPartition) {
	if tp.Topic == nil {
		return
	}
	k := partition{topic: *tp.Topic, id: tp.Partition}
	if cur, ok := u[k]; !ok || tp.Offset > cur.last {
		u[k] = stable{last: tp.Offset, stable: -1}
	}
}

// confirm waits until every partition in pending has its last stable offset
// (what read_committed consumers may read up to) past the batch's last
// offset there, i.e. until the commit markers are written, for at most
// OperationTimeout.
//
// A coordinator acknowledges a commit once it has logged its decision and
// writes the partitions' markers afterwards. It should retry them until
// written, but in Kafka 4.x the broker's metadata cache reports a partition
// without a leader as unknown (KAFKA-20734; seen on 4.3.1), and the
// coordinator then skips its markers, as if the topic had been deleted, and
// logs the transaction complete: when a cluster's last replica
// of a partition shuts down between the commit and its markers, the records
// stay in an open ("hanging") transaction after the restart, invisible to
// read_committed consumers until an operator aborts it. A batch counts as
// published only once its records are visible.
func (p *Publisher) confirm(ctx context.Context, tp *txnProducer, pending batchEnds) error {
	if len(pending) == 0 {
		return nil
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, p.opts.OperationTimeout)
	defer cancel()
	delay := confirmFirstDelay
	var lastErr error
	for {
		lastErr = p.confirmOnce(ctx, tp.admin, pending)
		if len(pending) == 0 {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if err := parent.Err(); err != nil {
				return err
			}
			return fmt.Errorf("%w after %s: %s (last query: %v)", errUnconfirmed, p.opts.OperationTimeout, describe(pending), lastErr)
		}
		delay = min(2*delay, confirmMaxDelay)
	}
}

// confirmOnce queries the last stable offsets of pending's partitions and
// removes the partitions whose stable offset is past their batch offset. It
// returns the query's error, if any, for the report of a confirmation that
// times out.
func (p *Publisher) confirmOnce(ctx context.Context, admin *kafka.AdminClient, pending batchEnds) error {
	specs := make(map[kafka.TopicPartition]kafka.OffsetSpec, len(pending))
	for k := range pending {
		topic := k.topic
		specs[kafka.TopicPartition{Topic: &topic, Partition: k.id}] = kafka.LatestOffsetSpec
	}
	res, err := admin.ListOffsets(ctx, specs, kafka.SetAdminIsolationLevel(kafka.IsolationLevelReadCommitted))
	if err != nil {
		return err
	}
	var errs []error
	for tp, info := range res.ResultInfos {
		if tp.Topic == nil {
			continue
		}
		k := partition{topic: *tp.Topic, id: tp.Partition}
		s, ok := pending[k]
		if !ok {
			continue
		}
		if info.Error.Code() != kafka.ErrNoError {
			errs = append(errs, fmt.Errorf("%s: %w", k, info.Error))
			continue
		}
		if info.Offset > s.last {
			delete(pending, k)
			continue
		}
		s.stable = info.Offset
		pending[k] = s
	}
	return errors.Join(errs...)
}

// describe lists pending's partitions in order, e.g.
// "chat-messages[0] stable at 207, batch ends at 207".
func describe(pending batchEnds) string {
	parts := make([]string, 0, len(pending))
	for k, s := range pending {
		seen := "unknown"
		if s.stable >= 0 {
			seen = fmt.Sprint(int64(s.stable))
		}
		parts = append(parts, fmt.Sprintf("%s stable at %s, batch ends at %d", k, seen, int64(s.last)))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}
