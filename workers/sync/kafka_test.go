package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
)

// syncPartitions lists the partitions of the sync's two topics on a cluster.
func syncPartitions(t testing.TB, md stacktest.MetadataSource, cluster string) []kafka.TopicPartition {
	t.Helper()
	return stacktest.Partitions(t, md, cluster, change.TopicMessages, change.TopicChats)
}

// partitionEnds returns syncPartitions with each partition's current end
// (high watermark) as its Offset.
func partitionEnds(t testing.TB, c *kafka.Consumer, cluster string) []kafka.TopicPartition {
	t.Helper()
	tps := syncPartitions(t, c, cluster)
	for i, tp := range tps {
		_, high, err := c.QueryWatermarkOffsets(*tp.Topic, tp.Partition, 10000)
		if err != nil {
			t.Fatalf("offsets of %s[%d] on %s: %v", *tp.Topic, tp.Partition, cluster, err)
		}
		tps[i].Offset = kafka.Offset(high)
	}
	return tps
}

// published is one record the sync published, as a read_committed consumer
// of one cluster's own topics saw it.
type published struct {
	cluster   string
	topic     string
	partition int32
	offset    int64
	chatID    string
	id        string // message ID, or chat ID on the chats topic
	chatType  change.ChatType
	deleted   bool
	version   int64
	worker    string // the publishing worker (change.HeaderWorker)
	attempt   string // the publishing activity attempt (change.HeaderAttempt)
	seenAt    time.Time
}

// trace consumes change.TopicMessages and change.TopicChats of one cluster
// from their ends at its start, read_committed, until the test ends.
type trace struct {
	cluster, bootstrap string

	mu   sync.Mutex
	recs []published
	seen map[string]bool // topic/partition/offset of every record in recs
	err  error
}

func startTrace(t testing.TB, cluster, bootstrap string) *trace {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":                  bootstrap,
		"group.id":                           stacktest.UniqueName("sync-trace"),
		"auto.offset.reset":                  "earliest",
		"enable.auto.commit":                 false,
		"isolation.level":                    "read_committed",
		"topic.metadata.refresh.interval.ms": 1000,
		// Fetches return as soon as a transaction commits, not after the
		// default 500 ms wait: seenAt is when a consumer could see a record.
		"fetch.wait.max.ms": 10,
		"log_level":         3,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Start at the topics' current ends: everything the test publishes comes
	// later, and a trace that first read the topics' whole history would see
	// the test's records late.
	assign := partitionEnds(t, c, cluster)
	if err := c.Assign(assign); err != nil {
		t.Fatal(err)
	}
	tr := &trace{cluster: cluster, bootstrap: bootstrap, seen: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			ev := c.Poll(100)
			m, ok := ev.(*kafka.Message)
			if !ok {
				continue
			}
			rec, err := decodePublished(cluster, m)
			at := fmt.Sprint(rec.topic, "/", rec.partition, "/", rec.offset)
			tr.mu.Lock()
			if err != nil && tr.err == nil {
				tr.err = err
			}
			if !tr.seen[at] { // a re-read after an offset reset is not a new record
				tr.seen[at] = true
				tr.recs = append(tr.recs, rec)
			}
			tr.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		c.Close()
	})
	return tr
}

func decodePublished(cluster string, m *kafka.Message) (published, error) {
	p := published{
		cluster: cluster, topic: *m.TopicPartition.Topic, partition: m.TopicPartition.Partition,
		offset: int64(m.TopicPartition.Offset), chatID: string(m.Key), seenAt: time.Now(),
	}
	for _, h := range m.Headers {
		switch h.Key {
		case change.HeaderWorker:
			p.worker = string(h.Value)
		case change.HeaderAttempt:
			p.attempt = string(h.Value)
		}
	}
	switch p.topic {
	case change.TopicMessages:
		msg, err := change.DecodeMessage(m.Value)
		if err != nil {
			return p, fmt.Errorf("%s offset %d: %w", p.topic, p.offset, err)
		}
		if msg.ChatID != p.chatID {
			return p, fmt.Errorf("%s offset %d: key %q but chatId %q", p.topic, p.offset, p.chatID, msg.ChatID)
		}
		p.id, p.deleted, p.version = msg.ID, msg.IsDeleted, msg.Version
	case change.TopicChats:
		c, err := change.DecodeChat(m.Value)
		if err != nil {
			return p, fmt.Errorf("%s offset %d: %w", p.topic, p.offset, err)
		}
		p.id, p.chatType, p.version = c.ID, c.Type, c.Version
	}
	return p, nil
}

// records returns what the traces have seen of the given chats.
func records(chats map[string]bool, traces ...*trace) ([]published, error) {
	var out []published
	for _, tr := range traces {
		tr.mu.Lock()
		if tr.err != nil {
			tr.mu.Unlock()
			return nil, tr.err
		}
		for _, r := range tr.recs {
			if chats[r.chatID] {
				out = append(out, r)
			}
		}
		tr.mu.Unlock()
	}
	return out, nil
}

func chatsOf(acked []loadgen.Record) map[string]bool {
	chats := map[string]bool{}
	for _, r := range acked {
		chats[r.ChatID] = true
	}
	return chats
}

// missing lists the acknowledged writes no published record reflects:
// creates and edits by (ID, version), deletes by a deleted state or a chat
// delete event.
func missing(acked []loadgen.Record, recs []published) []string {
	type key struct {
		id      string
		version int64
	}
	versions := map[key]bool{}
	deletedMsgs, deletedChats := map[string]bool{}, map[string]bool{}
	for _, r := range recs {
		versions[key{r.id, r.version}] = true
		if r.topic == change.TopicMessages && r.deleted {
			deletedMsgs[r.id] = true
		}
		if r.chatType == change.ChatDelete {
			deletedChats[r.id] = true
		}
	}
	var out []string
	for _, a := range acked {
		ok := false
		switch a.Op {
		case loadgen.OpChatCreated:
			ok = versions[key{a.ChatID, a.Version}]
		case loadgen.OpMessageCreated, loadgen.OpMessageUpdated:
			ok = versions[key{a.MessageID, a.Version}]
		case loadgen.OpMessageDeleted:
			ok = deletedMsgs[a.MessageID]
		case loadgen.OpChatDeleted:
			ok = deletedChats[a.ChatID]
		}
		if !ok {
			out = append(out, fmt.Sprintf("%s chat=%s msg=%s v=%d", a.Op, a.ChatID, a.MessageID, a.Version))
		}
	}
	return out
}

// waitDelivered waits until every acknowledged write is published and
// returns the records of the writes' chats.
func waitDelivered(t testing.TB, acked []loadgen.Record, deadline time.Duration, traces ...*trace) []published {
	t.Helper()
	chats := chatsOf(acked)
	var (
		recs []published
		lost []string
	)
	for end := time.Now().Add(deadline); ; time.Sleep(100 * time.Millisecond) {
		var err error
		if recs, err = records(chats, traces...); err != nil {
			t.Fatal(err)
		}
		if lost = missing(acked, recs); len(lost) == 0 {
			return recs
		}
		if time.Now().After(end) {
			break
		}
	}
	// Tell a loss from a trace that missed records, and from records stuck
	// behind an open transaction: read every cluster's topics again, from the
	// beginning, committed only and then everything.
	var committed, all []published
	for _, tr := range traces {
		committed = append(committed, rescan(t, tr.cluster, tr.bootstrap, chats, "read_committed")...)
		all = append(all, rescan(t, tr.cluster, tr.bootstrap, chats, "read_uncommitted")...)
	}
	t.Fatalf("waited %s for all %d acknowledged writes in Kafka: %d lost, e.g. %s; re-reading the topics from the start, "+
		"%d are missing read_committed and %d read_uncommitted",
		deadline, len(acked), len(lost), strings.Join(lost[:min(5, len(lost))], "; "),
		len(missing(acked, committed)), len(missing(acked, all)))
	return nil
}

// rescan reads change.TopicMessages and change.TopicChats of one cluster
// from the beginning to their current ends (for at most a minute) with the
// given isolation level, and returns the records of the given chats.
func rescan(t testing.TB, cluster, bootstrap string, chats map[string]bool, isolation string) []published {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers": bootstrap, "group.id": stacktest.UniqueName("sync-rescan"),
		"enable.auto.commit": false, "isolation.level": isolation, "log_level": 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ends := map[string]int64{}
	var assign []kafka.TopicPartition
	for _, tp := range partitionEnds(t, c, cluster) {
		if tp.Offset > 0 {
			ends[fmt.Sprint(*tp.Topic, "/", tp.Partition)] = int64(tp.Offset)
			assign = append(assign, kafka.TopicPartition{Topic: tp.Topic, Partition: tp.Partition, Offset: kafka.OffsetBeginning})
		}
	}
	if err := c.Assign(assign); err != nil {
		t.Fatal(err)
	}
	var out []published
	for deadline := time.Now().Add(time.Minute); len(ends) > 0 && time.Now().Before(deadline); {
		m, ok := c.Poll(100).(*kafka.Message)
		if !ok {
			continue
		}
		k := fmt.Sprint(*m.TopicPartition.Topic, "/", m.TopicPartition.Partition)
		if int64(m.TopicPartition.Offset)+1 >= ends[k] {
			delete(ends, k)
		}
		if r, err := decodePublished(cluster, m); err == nil && chats[r.chatID] {
			out = append(out, r)
		}
	}
	return out
}

// orderViolations lists records that carried a version of a chat for the
// first time after a higher version of that chat, in one partition of one
// cluster's topic. Re-published duplicates of older versions are allowed
// (consumers ignore them by version); a new version behind a newer one is not.
func orderViolations(recs []published) []string {
	type stream struct {
		cluster, topic string
		partition      int32
		chatID         string
	}
	by := map[stream][]published{}
	for _, r := range recs {
		s := stream{r.cluster, r.topic, r.partition, r.chatID}
		by[s] = append(by[s], r)
	}
	var out []string
	for s, rs := range by {
		sort.Slice(rs, func(i, j int) bool { return rs[i].offset < rs[j].offset })
		seen := map[int64]bool{}
		var high int64
		for _, r := range rs {
			if !seen[r.version] && r.version < high {
				out = append(out, fmt.Sprintf("%s/%s[%d] chat %s: version %d first at offset %d, after %d",
					s.cluster, s.topic, s.partition, s.chatID, r.version, r.offset, high))
			}
			seen[r.version] = true
			high = max(high, r.version)
		}
	}
	return out
}

// duplicates counts records beyond the first of each (topic, id, version).
func duplicates(recs []published) int {
	type key struct {
		topic, id string
		version   int64
	}
	seen := map[key]bool{}
	n := 0
	for _, r := range recs {
		k := key{r.topic, r.id, r.version}
		if seen[k] {
			n++
		}
		seen[k] = true
	}
	return n
}

// storm runs the load generator against the test's external service in the
// background; wait returns its acknowledged writes once it has finished.
// It stops at cfg.Duration or when ctx ends.
func (e *syncEnv) storm(ctx context.Context, cfg loadgen.Config) (wait func() []loadgen.Record) {
	e.t.Helper()
	cfg.BaseURL = e.external
	rec := &loadgen.MemoryRecorder{}
	done := make(chan error, 1)
	go func() {
		_, err := loadgen.Run(ctx, cfg, rec, nil)
		done <- err
	}()
	return func() []loadgen.Record {
		e.t.Helper()
		if err := <-done; err != nil {
			e.t.Fatalf("load generator: %v", err)
		}
		acked := rec.Records()
		if len(acked) == 0 {
			e.t.Fatal("the load generator got no write acknowledged")
		}
		return acked
	}
}
