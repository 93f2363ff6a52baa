package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

// TestRecordsPostgresRefusesAreDeadLettered puts records that pass every
// check of the writer but break a constraint of the database (added by the
// test, as a real constraint or limit would) among good ones of one batch:
// each is dead-lettered with Postgres's reason and counted, and the rest of
// the batch — before and after it — is written; nothing wedges.
func TestRecordsPostgresRefusesAreDeadLettered(t *testing.T) {
	t.Parallel()
	e := newWriterEnv(t)
	pool := stacktest.Pool(t, e.dsn, 2)
	for _, stmt := range []string{
		`ALTER TABLE messages ADD CONSTRAINT test_no_poison CHECK (content <> 'poison')`,
		`ALTER TABLE chats ADD CONSTRAINT test_no_poison CHECK (id NOT LIKE '%-poison')`,
	} {
		if _, err := pool.Exec(t.Context(), stmt); err != nil {
			t.Fatal(err)
		}
	}
	chat := e.prefix + "-c"
	var good []change.Message
	var recs []stacktest.Record
	chatRec := func(c change.Chat) stacktest.Record {
		return stacktest.Record{Topic: e.cfg.ChatTopic, Key: c.ID, Value: mustJSON(t, c)}
	}
	msgRec := func(m change.Message) stacktest.Record {
		return stacktest.Record{Topic: e.cfg.MessageTopic, Key: m.ChatID, Value: mustJSON(t, m)}
	}
	recs = append(recs, chatRec(chatdbtest.ChatNew(chat, 1)))
	for i := range 30 {
		m := chatdbtest.Msg(fmt.Sprintf("%s-m%d", chat, i), chat, int64(i), 1, fmt.Sprintf("hello %d", i), false)
		good = append(good, m)
		recs = append(recs, msgRec(m))
		if i == 10 || i == 20 {
			recs = append(recs, msgRec(chatdbtest.Msg(fmt.Sprintf("%s-bad%d", chat, i), chat, int64(i), 1, "poison", false)))
		}
	}
	badChat := chatdbtest.ChatNew(e.prefix+"-poison", 1)
	poison := []stacktest.Record{recs[12], recs[23], chatRec(badChat)}
	recs = append(recs, poison[2])
	// Produced before the writer starts, so that they share batches.
	produce(t, e.producer, recs)
	w := e.startInProcess("writer-1")

	m := chatdbtest.NewModel()
	m.Apply(chatdb.Batch{Messages: good, Chats: []change.Chat{chatdbtest.ChatNew(chat, 1)}})
	e.waitConverged(m, convergeDeadline)

	dead := readTopics(t, e.bootstrap, len(poison), change.DeadLetterTopic(e.cfg.MessageTopic), change.DeadLetterTopic(e.cfg.ChatTopic))
	for _, p := range poison {
		i := slices.IndexFunc(dead, func(d *kafka.Message) bool { return string(d.Value) == string(p.Value) })
		if i < 0 {
			t.Errorf("refused record %.60s is not in the dead-letter topics", p.Value)
			continue
		}
		h := headers(dead[i])
		if !strings.Contains(h[change.HeaderError], "test_no_poison") || !strings.Contains(h[change.HeaderError], chatdb.ErrRejected.Error()) ||
			h[change.HeaderSourceTopic] != p.Topic || *dead[i].TopicPartition.Topic != change.DeadLetterTopic(p.Topic) {
			t.Errorf("dead letter of %.60s: topic %s, headers %v", p.Value, *dead[i].TopicPartition.Topic, h)
		}
	}
	if n := w.counter(t, change.KindMessage, outcomeDeadLettered); n != 2 {
		t.Errorf("dead-lettered messages counted: %v, want 2", n)
	}
	if n := w.counter(t, change.KindChat, outcomeDeadLettered); n != 1 {
		t.Errorf("dead-lettered chat records counted: %v, want 1", n)
	}
	if n := w.counter(t, change.KindMessage, outcomeWritten); n != float64(len(good)) {
		t.Errorf("messages written: %v, want %d", n, len(good))
	}
}

// TestTopicCreatedAgainStopsItsPartitions deletes a topic under a running
// writer and creates it again with fewer records than the writer had
// stored: the stored offsets are past the new log's end. The writer must
// stop those partitions (metric, nothing of the new log written — neither
// skipped nor read from a wrong place) until the operator deletes their
// offsets, as README says; it then reads the new log from its start.
func TestTopicCreatedAgainStopsItsPartitions(t *testing.T) {
	t.Parallel()
	e := newWriterEnv(t)
	topic := e.cfg.MessageTopic
	chat := e.prefix + "-c"
	w := e.startInProcess("writer-1")

	// Ten messages on each partition, then a wait until they are stored.
	var first []change.Message
	for i := range 10 * topicPartitions {
		first = append(first, chatdbtest.Msg(fmt.Sprintf("%s-old%d", chat, i), chat, int64(i), 1, "old", false))
	}
	produceTo(t, e, topic, first)
	m := chatdbtest.NewModel()
	m.Apply(chatdb.Batch{Messages: first})
	e.waitConverged(m, convergeDeadline)

	recreateTopic(t, e.bootstrap, topic)
	var second []change.Message
	for i := range topicPartitions {
		second = append(second, chatdbtest.Msg(fmt.Sprintf("%s-new%d", chat, i), chat, int64(100+i), 1, "new", false))
	}
	produceTo(t, e, topic, second)

	stacktest.WaitFor(t, convergeDeadline, "every partition of the topic created again to be stopped", func() error {
		if n := w.gauge(t, "writer_partitions_stopped"); n != topicPartitions {
			return fmt.Errorf("%v partitions stopped", n)
		}
		return nil
	})
	stored, _, err := e.db.Messages(t.Context(), chat)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range stored {
		if strings.Contains(msg.ID, "-new") {
			t.Errorf("message %s of the new log written while its partition is stopped", msg.ID)
		}
	}

	// The operator's action (README): delete the partitions' offsets.
	pool := stacktest.Pool(t, e.dsn, 2)
	if _, err := pool.Exec(t.Context(), `DELETE FROM consumer_offsets WHERE group_id = $1 AND topic = $2`,
		e.cfg.Group+"@"+e.cfg.KafkaCluster, topic); err != nil {
		t.Fatal(err)
	}
	m.Apply(chatdb.Batch{Messages: second})
	e.waitConverged(m, convergeDeadline+recheckEvery)
	if n := w.gauge(t, "writer_partitions_stopped"); n != 0 {
		t.Errorf("%v partitions still stopped after their offsets were deleted", n)
	}
}

// produceTo produces msgs to topic's partitions in turn and waits until
// Kafka acknowledged them.
func produceTo(t *testing.T, e *writerEnv, topic string, msgs []change.Message) {
	t.Helper()
	acks := make(chan kafka.Event, len(msgs))
	for i, msg := range msgs {
		err := e.producer.Produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(i % topicPartitions)},
			Key:            []byte(msg.ChatID), Value: mustJSON(t, msg),
		}, acks)
		if err != nil {
			t.Fatal(err)
		}
	}
	for range msgs {
		if m := (<-acks).(*kafka.Message); m.TopicPartition.Error != nil {
			t.Fatal(m.TopicPartition.Error)
		}
	}
}

// recreateTopic deletes topic and creates it again with topicPartitions
// partitions, waiting for each step to take effect.
func recreateTopic(t *testing.T, bootstrap, topic string) {
	t.Helper()
	admin, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": bootstrap})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := admin.DeleteTopics(ctx, []string{topic}, kafka.SetAdminOperationTimeout(30*time.Second))
	if err == nil && res[0].Error.Code() != kafka.ErrNoError {
		err = res[0].Error
	}
	if err != nil {
		t.Fatalf("delete topic %s: %v", topic, err)
	}
	stacktest.WaitFor(t, time.Minute, "topic "+topic+" to be created again", func() error {
		res, err := admin.CreateTopics(ctx, []kafka.TopicSpecification{{Topic: topic, NumPartitions: topicPartitions, ReplicationFactor: 1}})
		if err == nil && res[0].Error.Code() != kafka.ErrNoError {
			err = res[0].Error
		}
		return err
	})
}
