package kafkaclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// StartNewGroupAtEnd gives a consumer group that has never committed an
// offset a committed offset at the end (the last stable offset) of every
// partition of the topics match accepts, and reports whether it did. It
// leaves a group that has committed offsets alone.
//
// With it, a consumer can use auto.offset.reset=earliest and still start
// a new group at the end of what exists: every partition that existed
// when the group began has a committed offset, so a partition without one
// was created after (a MirrorMaker 2 copy that appeared later) and all of
// its records are new. auto.offset.reset=latest instead resets every
// partition the group never consumed from (a topic with no new records
// since the group began) to its end at each rejoin: the records written
// there while the consumer was out of its group (a Kafka outage, a
// restart) were skipped (issue 15: a chat created while region a's
// internal instance rejoined after an outage never reached its browsers).
//
// Offsets are altered with the admin API, which needs the group to have no
// members. A group that has members but no offsets is not new (see
// hasMembers): it is left alone.
func StartNewGroupAtEnd(ctx context.Context, admin *kafka.AdminClient, group string, match func(topic string) bool) (bool, error) {
	committed, err := admin.ListConsumerGroupOffsets(ctx, []kafka.ConsumerGroupTopicPartitions{{Group: group}},
		kafka.SetAdminRequireStableOffsets(true))
	if err != nil {
		return false, fmt.Errorf("list the offsets of group %s: %w", group, err)
	}
	for _, g := range committed.ConsumerGroupsTopicPartitions {
		for _, tp := range g.Partitions {
			if tp.Error == nil && tp.Offset >= 0 {
				return false, nil
			}
		}
	}

	md, err := admin.GetMetadata(nil, true, timeoutMs(ctx))
	if err != nil {
		return false, fmt.Errorf("metadata: %w", err)
	}
	ends := map[kafka.TopicPartition]kafka.OffsetSpec{}
	for name, t := range md.Topics {
		if !match(name) {
			continue
		}
		if t.Error.Code() != kafka.ErrNoError {
			return false, fmt.Errorf("metadata of topic %s: %w", name, t.Error)
		}
		for _, p := range t.Partitions {
			ends[kafka.TopicPartition{Topic: &name, Partition: p.ID}] = kafka.LatestOffsetSpec
		}
	}
	if len(ends) == 0 {
		return false, nil // no topic yet: every one created later is read from its start
	}
	res, err := admin.ListOffsets(ctx, ends, kafka.SetAdminIsolationLevel(kafka.IsolationLevelReadCommitted))
	if err != nil {
		return false, fmt.Errorf("list the ends of the topics: %w", err)
	}
	start := make([]kafka.TopicPartition, 0, len(res.ResultInfos))
	for tp, info := range res.ResultInfos {
		if info.Error.Code() != kafka.ErrNoError {
			return false, fmt.Errorf("end of %s[%d]: %w", *tp.Topic, tp.Partition, info.Error)
		}
		start = append(start, kafka.TopicPartition{Topic: tp.Topic, Partition: tp.Partition, Offset: kafka.Offset(info.Offset)})
	}
	alt, err := admin.AlterConsumerGroupOffsets(ctx, []kafka.ConsumerGroupTopicPartitions{{Group: group, Partitions: start}})
	if err != nil {
		if hasMembers(err) {
			return false, nil
		}
		return false, fmt.Errorf("commit the ends for group %s: %w", group, err)
	}
	for _, g := range alt.ConsumerGroupsTopicPartitions {
		for _, tp := range g.Partitions {
			if tp.Error != nil {
				if hasMembers(tp.Error) {
					return false, nil
				}
				return false, fmt.Errorf("commit the end of %s[%d] for group %s: %w", *tp.Topic, tp.Partition, group, tp.Error)
			}
		}
	}
	return true, nil
}

// hasMembers reports whether err says the group has members, so its
// offsets cannot be set from outside. Such a group is not new, even with
// no offset committed: an earlier instance joined it (and was killed before
// its first commit, or never read a record). Starting it at the end would
// skip what was written since that instance began; it is left to read its
// partitions from their start instead (a replay, which the consumer's
// version checks make invisible), never to skip.
func hasMembers(err error) bool {
	var kerr kafka.Error
	if !errors.As(err, &kerr) {
		return false
	}
	switch kerr.Code() {
	case kafka.ErrUnknownMemberID, kafka.ErrIllegalGeneration, kafka.ErrRebalanceInProgress, kafka.ErrFencedInstanceID:
		return true
	}
	return false
}

// timeoutMs is what is left of ctx in milliseconds (5 s without a
// deadline), for the calls that take a timeout instead of a context.
func timeoutMs(ctx context.Context) int {
	d, ok := ctx.Deadline()
	if !ok {
		return 5000
	}
	return max(1, int(time.Until(d)/time.Millisecond))
}
