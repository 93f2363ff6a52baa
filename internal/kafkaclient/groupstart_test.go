package kafkaclient_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/kafkaclient"
)

// groupStartEnv is a fresh topic prefix on the stack's cluster a, a group
// of its own, and an admin client.
type groupStartEnv struct {
	t                      *testing.T
	bootstrap, prefix      string
	producer               *kafka.Producer
	admin                  *kafka.AdminClient
	old, later, otherTopic string
}

func newGroupStartEnv(t *testing.T) *groupStartEnv {
	t.Helper()
	stack := stacktest.Connect(t)
	e := &groupStartEnv{t: t, bootstrap: stacktest.Env(t, stack, devstack.EnvKafkaABootstrap), prefix: stacktest.UniqueName("groupstart")}
	e.old, e.later, e.otherTopic = e.prefix+"-old", e.prefix+"-later", e.prefix+"x-other"
	e.producer = stacktest.NewProducer(t, e.bootstrap)
	admin, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": e.bootstrap})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	e.admin = admin
	return e
}

func (e *groupStartEnv) match(topic string) bool { return strings.HasPrefix(topic, e.prefix+"-") }

func (e *groupStartEnv) produce(topic string, values ...string) {
	e.t.Helper()
	recs := make([]stacktest.Record, len(values))
	for i, v := range values {
		recs[i] = stacktest.Record{Topic: topic, Key: v, Value: []byte(v)}
	}
	if err := stacktest.Produce(e.producer, recs, len(recs), 0); err != nil {
		e.t.Fatal(err)
	}
}

func (e *groupStartEnv) start(group string) bool {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started, err := kafkaclient.StartNewGroupAtEnd(ctx, e.admin, group, e.match)
	if err != nil {
		e.t.Fatalf("StartNewGroupAtEnd: %v", err)
	}
	return started
}

// committed returns the group's committed offsets, "topic[p]=offset".
func (e *groupStartEnv) committed(group string) []string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := e.admin.ListConsumerGroupOffsets(ctx, []kafka.ConsumerGroupTopicPartitions{{Group: group}})
	if err != nil {
		e.t.Fatal(err)
	}
	var got []string
	for _, g := range res.ConsumerGroupsTopicPartitions {
		for _, tp := range g.Partitions {
			if tp.Offset >= 0 {
				got = append(got, fmt.Sprintf("%s[%d]=%d", *tp.Topic, tp.Partition, tp.Offset))
			}
		}
	}
	sort.Strings(got)
	return got
}

// consumeAll runs a member of group (as the internal app's: subscribed to
// the prefix's pattern, earliest for partitions without a committed
// offset) until it has read want values, and returns what it read, sorted.
func (e *groupStartEnv) consumeAll(group string, want int) []string {
	e.t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers": e.bootstrap, "group.id": group, "isolation.level": "read_committed",
		"auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	defer kafkaclient.CloseConsumer(c, 10*time.Second)
	if err := c.Subscribe("^"+e.prefix+"-.*", nil); err != nil {
		e.t.Fatal(err)
	}
	var got []string
	stacktest.WaitFor(e.t, time.Minute, fmt.Sprintf("%d records consumed", want), func() error {
		for range 20 {
			if m, ok := c.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
				got = append(got, string(m.Value))
			}
		}
		if len(got) < want {
			return fmt.Errorf("%d so far: %v", len(got), got)
		}
		return nil
	})
	// Nothing more than wanted arrives (the old records stay unread).
	for range 10 {
		if m, ok := c.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
			got = append(got, string(m.Value))
		}
	}
	sort.Strings(got)
	return got
}

// A new group starts at the end of the topics that exist; a topic created
// after it, and records written to a partition it never read while it had
// no member, are read from their start: what auto.offset.reset=latest lost
// (issue 15).
func TestStartNewGroupAtEndReadsOnlyWhatCameAfter(t *testing.T) {
	t.Parallel()
	e := newGroupStartEnv(t)
	stacktest.CreateTopics(t, e.bootstrap, 2, e.old, e.otherTopic)
	e.produce(e.old, "history-1", "history-2", "history-3")
	group := e.prefix + "-group"

	if !e.start(group) {
		t.Fatal("a group with no offsets was not started")
	}
	got := e.committed(group)
	if len(got) != 2 || !strings.HasPrefix(got[0], e.old+"[0]=") || !strings.HasPrefix(got[1], e.old+"[1]=") {
		t.Fatalf("committed %v: want both partitions of %s only (not %s)", got, e.old, e.otherTopic)
	}
	var sum int
	for _, s := range got {
		var n int
		fmt.Sscanf(s[strings.Index(s, "=")+1:], "%d", &n)
		sum += n
	}
	if sum != 3 {
		t.Fatalf("committed %v: want the ends (3 records in all)", got)
	}

	// Records written while the group has no member, to partitions it
	// never read from, and a topic created since.
	e.produce(e.old, "while-away-1", "while-away-2")
	stacktest.CreateTopics(t, e.bootstrap, 2, e.later)
	e.produce(e.later, "new-topic-1")
	want := []string{"new-topic-1", "while-away-1", "while-away-2"}
	if got := e.consumeAll(group, len(want)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("consumed %v, want %v", got, want)
	}

	// The group has offsets now: a second start leaves them alone.
	before := e.committed(group)
	if e.start(group) {
		t.Fatal("a group with offsets was started again")
	}
	if after := e.committed(group); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("offsets changed from %v to %v", before, after)
	}
}

// With no topic yet, nothing is committed: every topic created later is
// read from its start.
func TestStartNewGroupAtEndWithNoTopicCommitsNothing(t *testing.T) {
	t.Parallel()
	e := newGroupStartEnv(t)
	group := e.prefix + "-group"
	if e.start(group) {
		t.Fatal("started a group with no topic to start on")
	}
	if got := e.committed(group); len(got) != 0 {
		t.Fatalf("committed %v, want nothing", got)
	}
	stacktest.CreateTopics(t, e.bootstrap, 1, e.later)
	e.produce(e.later, "first")
	if got := e.consumeAll(group, 1); fmt.Sprint(got) != "[first]" {
		t.Fatalf("consumed %v, want [first]", got)
	}
}

// A group with a member but no committed offset (an instance killed before
// its first commit, whose session has not run out) is not new: it is left
// alone, and its partitions are read from their start, so that nothing
// written since that instance began is skipped.
func TestStartNewGroupAtEndLeavesAGroupWithAMember(t *testing.T) {
	t.Parallel()
	e := newGroupStartEnv(t)
	stacktest.CreateTopics(t, e.bootstrap, 1, e.old)
	e.produce(e.old, "before-the-member")
	group := e.prefix + "-group"

	member, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers": e.bootstrap, "group.id": group, "group.instance.id": group,
		"enable.auto.commit": false, "session.timeout.ms": 60000,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer kafkaclient.CloseConsumer(member, 10*time.Second)
	if err := member.Subscribe(e.old, nil); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, time.Minute, "the member to join", func() error {
		member.Poll(100)
		if a, err := member.Assignment(); err != nil || len(a) == 0 {
			return fmt.Errorf("assignment %v, %v", a, err)
		}
		return nil
	})

	if e.start(group) {
		t.Fatal("started a group that has a member")
	}
	if got := e.committed(group); len(got) != 0 {
		t.Fatalf("committed %v, want nothing", got)
	}
}
