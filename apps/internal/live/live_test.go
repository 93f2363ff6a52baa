package live

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A failed offset commit is counted every time and logged once until a
// commit succeeds again; "nothing to commit" is neither.
func TestCommitFailuresAreCountedAndLoggedOnce(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	c := &Consumer{metrics: NewMetrics(prometheus.NewRegistry()), log: slog.New(slog.NewTextHandler(&logs, nil))}
	topic := "chats"
	failed := kafka.OffsetsCommitted{Error: kafka.NewError(kafka.ErrUnknownMemberID, "Broker: Unknown member", false)}
	partFailed := kafka.OffsetsCommitted{Offsets: []kafka.TopicPartition{
		{Topic: &topic, Partition: 1, Offset: 7, Error: kafka.NewError(kafka.ErrRebalanceInProgress, "Broker: Group rebalance in progress", false)},
	}}
	nothing := kafka.OffsetsCommitted{Error: kafka.NewError(kafka.ErrNoOffset, "Local: No offset stored", false)}
	ok := kafka.OffsetsCommitted{Offsets: []kafka.TopicPartition{{Topic: &topic, Partition: 1, Offset: 8}}}

	for _, e := range []kafka.OffsetsCommitted{nothing, failed, partFailed, nothing, failed, ok, ok, partFailed} {
		c.committed(e)
	}
	if got := testutil.ToFloat64(c.metrics.commitErrors); got != 4 {
		t.Errorf("internal_kafka_commit_errors_total = %v, want 4", got)
	}
	out := logs.String()
	if n := strings.Count(out, "offset commit failed"); n != 2 {
		t.Errorf("logged %d failures, want 2 (one per run of failures):\n%s", n, out)
	}
	if n := strings.Count(out, "succeed again"); n != 1 {
		t.Errorf("logged %d recoveries, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "chats[1]") {
		t.Errorf("a partition's commit error does not name the partition:\n%s", out)
	}
}
