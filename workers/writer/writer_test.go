package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

// convergeDeadline bounds the wait for a writer to apply what a test
// produced; it is a hang detector, not a performance target.
const convergeDeadline = 2 * time.Minute

// TestAppliesAnyArrivalOrder feeds histories' records through Kafka in
// random order with duplicates — on cluster a's topics and, through
// MirrorMaker 2, on cluster a's mirrored copies of cluster b's — to one
// writer. The database must end up with every change's last version, and
// every record must have been counted exactly once, written or stale.
func TestAppliesAnyArrivalOrder(t *testing.T) {
	t.Parallel()
	for run := range 3 {
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			t.Parallel()
			seed := rand.Uint64()
			t.Logf("seed %d", seed)
			r := rand.New(rand.NewPCG(seed, uint64(run)))
			e := newWriterEnv(t)
			bootstrapB := stacktest.Env(t, e.stack, devstack.EnvKafkaBBootstrap)
			stacktest.CreateTopics(t, bootstrapB, topicPartitions, e.cfg.MessageTopic, e.cfg.ChatTopic)
			producerB := stacktest.NewProducer(t, bootstrapB)

			h := chatdbtest.NewHistory(r, e.prefix, 12, 1500)
			msgs, chats := h.Arrivals(r, 20)
			m := chatdbtest.NewModel()
			m.Apply(chatdb.Batch{Messages: msgs, Chats: chats})
			var onA, onB []stacktest.Record
			for _, rec := range e.records(r, msgs, chats) {
				if r.IntN(100) < 30 {
					onB = append(onB, rec)
				} else {
					onA = append(onA, rec)
				}
			}
			w := e.startInProcess("writer-1")
			produce(t, producerB, onB)
			produce(t, e.producer, onA)
			e.waitConverged(m, convergeDeadline)

			total := float64(len(msgs) + len(chats))
			counted := func() float64 {
				sum := 0.0
				for _, k := range []change.Kind{change.KindMessage, change.KindChat} {
					sum += w.counter(t, k, outcomeWritten) + w.counter(t, k, outcomeStale)
				}
				return sum
			}
			stacktest.WaitFor(t, convergeDeadline, "every record to be counted", func() error {
				if n := counted(); n < total {
					return fmt.Errorf("%v of %v records counted", n, total)
				}
				return nil
			})
			if n := counted(); n != total {
				t.Errorf("%v records counted, want %v (%d from cluster a, %d mirrored from b)", n, total, len(onA), len(onB))
			}
			t.Logf("%d records (%d on cluster a, %d mirrored from b) of %d rows", len(msgs)+len(chats), len(onA), len(onB), m.Rows())
		})
	}
}

// TestPoisonRecordsGoToDeadLetterTopics puts malformed records between good
// ones of one chat (so one partition): each lands in its topic's
// dead-letter topic, unchanged, with the reason and its source in headers,
// and is counted; the good records after it are written all the same.
func TestPoisonRecordsGoToDeadLetterTopics(t *testing.T) {
	t.Parallel()
	e := newWriterEnv(t)
	chat := e.prefix + "-c"
	good := []change.Message{
		chatdbtest.Msg(chat+"-m1", chat, 1, 2, "before", false),
		chatdbtest.Msg(chat+"-m2", chat, 3, 3, "after", false),
	}
	valid := string(mustJSON(t, good[0]))
	msgRecord := func(value string) stacktest.Record {
		return stacktest.Record{Topic: e.cfg.MessageTopic, Key: chat, Value: []byte(value)}
	}
	chatRecord := func(value string) stacktest.Record {
		return stacktest.Record{Topic: e.cfg.ChatTopic, Key: chat, Value: []byte(value)}
	}
	poison := []stacktest.Record{
		msgRecord(`{not json`),
		msgRecord(strings.Replace(valid, `"id":"`+good[0].ID+`",`, "", 1)),
		msgRecord(strings.Replace(valid, `"createdAt":"`, `"createdAt":"yesterday`, 1)),
		msgRecord(strings.Replace(valid, `"content":"before"`, `"content":"a\u0000b"`, 1)),
		msgRecord(strings.Replace(valid, `"version":2`, `"version":0`, 1)),
		msgRecord(strings.Repeat("x", maxRecordBytes+1)),
		// A 10 kB ID: Postgres refuses it as an index key ("index row
		// requires 10016 bytes"), which stopped every writer at that batch.
		msgRecord(strings.Replace(valid, `"id":"`+good[0].ID+`"`, `"id":"`+strings.Repeat("m", 10_000)+`"`, 1)),
		chatRecord(`{"type":"rename","id":"` + chat + `","version":5}`),
		chatRecord(`[]`),
		chatRecord(`{"type":"new","id":"` + strings.Repeat("c", 10_000) + `","version":5}`),
	}
	for i, p := range poison[1:7] {
		if string(p.Value) == valid {
			t.Fatalf("poison record %d is the valid record: the test's edit did not apply", i+1)
		}
	}
	w := e.startInProcess("writer-1")
	recs := []stacktest.Record{
		{Topic: e.cfg.ChatTopic, Key: chat, Value: mustJSON(t, chatdbtest.ChatNew(chat, 1))},
		msgRecord(valid), // the good record before the poison
	}
	recs = append(recs, poison...)
	recs = append(recs, stacktest.Record{Topic: e.cfg.MessageTopic, Key: chat, Value: mustJSON(t, good[1])})
	produce(t, e.producer, recs)

	m := chatdbtest.NewModel()
	m.Apply(chatdb.Batch{Messages: good, Chats: []change.Chat{chatdbtest.ChatNew(chat, 1)}})
	e.waitConverged(m, convergeDeadline)

	dead := readTopics(t, e.bootstrap, len(poison), change.DeadLetterTopic(e.cfg.MessageTopic), change.DeadLetterTopic(e.cfg.ChatTopic))
	for _, p := range poison {
		i := slices.IndexFunc(dead, func(d *kafka.Message) bool { return bytes.Equal(d.Value, p.Value) })
		if i < 0 {
			t.Errorf("poison record %.40q is not in the dead-letter topics", p.Value)
			continue
		}
		d := dead[i]
		if want := change.DeadLetterTopic(p.Topic); *d.TopicPartition.Topic != want {
			t.Errorf("poison record %.40q went to %s, want %s", p.Value, *d.TopicPartition.Topic, want)
		}
		h := headers(d)
		if h[change.HeaderError] == "" || h[change.HeaderSourceTopic] != p.Topic || h[change.HeaderSourceCluster] != "a" ||
			h[change.HeaderSourcePartition] == "" || h[change.HeaderSourceOffset] == "" || string(d.Key) != chat {
			t.Errorf("dead letter of %.40q: key %q, headers %v", p.Value, d.Key, h)
		}
		t.Logf("dead-lettered %.40q: %s", p.Value, h[change.HeaderError])
	}
	if n := w.counter(t, change.KindMessage, outcomeDeadLettered); n != 7 {
		t.Errorf("dead-lettered messages counted: %v, want 7", n)
	}
	if n := w.counter(t, change.KindChat, outcomeDeadLettered); n != 3 {
		t.Errorf("dead-lettered chat records counted: %v, want 3", n)
	}
}

// readTopics reads n records from the beginning of topics (read_committed)
// and fails the test if they do not arrive within a minute.
func readTopics(t testing.TB, bootstrap string, n int, topics ...string) []*kafka.Message {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers": bootstrap, "group.id": stacktest.UniqueName("reader"),
		"auto.offset.reset": "earliest", "enable.auto.commit": false,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SubscribeTopics(topics, nil); err != nil {
		t.Fatal(err)
	}
	var out []*kafka.Message
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for len(out) < n && ctx.Err() == nil {
		if m, ok := c.Poll(100).(*kafka.Message); ok {
			out = append(out, m)
		}
	}
	if len(out) < n {
		t.Fatalf("read %d records of %v within a minute, want %d", len(out), topics, n)
	}
	return out
}

func headers(m *kafka.Message) map[string]string {
	h := map[string]string{}
	for _, kv := range m.Headers {
		h[kv.Key] = string(kv.Value)
	}
	return h
}
