package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/activities"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
)

// postMessage writes a message through the external service's API and
// returns its ID.
func postMessage(t *testing.T, baseURL, chatID, content string) string {
	t.Helper()
	body, err := json.Marshal(map[string]string{"content": content})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Post(baseURL+"/chat/"+chatID, "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("post a message: %v", err)
	}
	defer resp.Body.Close()
	var m struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&m) != nil || m.ID == "" {
		t.Fatalf("post a message: %s, id %q", resp.Status, m.ID)
	}
	return m.ID
}

// deadLetters reads the sync's dead-letter topic on a cluster, read
// committed, from its start, until want records keyed by chatID arrived or
// a minute passed.
func deadLetters(t *testing.T, bootstrap, chatID string, want int) []*kafka.Message {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers": bootstrap, "group.id": stacktest.UniqueName("sync-dlq"),
		"auto.offset.reset": "earliest", "enable.auto.commit": false,
		"isolation.level": "read_committed", "log_level": 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SubscribeTopics([]string{activities.DeadLetterTopic}, nil); err != nil {
		t.Fatal(err)
	}
	var out []*kafka.Message
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for len(out) < want && ctx.Err() == nil {
		if m, ok := c.Poll(100).(*kafka.Message); ok && string(m.Key) == chatID {
			out = append(out, m)
		}
	}
	if len(out) < want {
		t.Fatalf("read %d dead letters of chat %s within a minute, want %d", len(out), chatID, want)
	}
	return out
}

// TestPoisonChangesAreDeadLetteredAndTheSyncMovesOn: external's feed
// sends, in one page, a message with a 10 kB ID and one whose content is
// not UTF-8 among good changes (its fault injection corrupts them; it never
// stores such data). Both go to external-feed.dlq with their reasons, are
// counted and logged once; the changes before, between and after them are
// published, and so is the next change.
func TestPoisonChangesAreDeadLetteredAndTheSyncMovesOn(t *testing.T) {
	t.Parallel()
	e := newSyncEnv(t)
	traces := e.traces()
	e.startWorkers(oneWorker)

	const longID, notUTF8 = "poison: long id", "poison: not utf-8"
	poison := fmt.Sprintf(`"feedPoison":{%q:"long-id",%q:"invalid-utf8"}`, longID, notUTF8)
	// Paused while the changes are written, so that they come in one page.
	e.setFaults(`{"feedPaused":true,` + poison + `}`)
	chat := stacktest.CreateChat(t, e.external)
	good := []string{postMessage(t, e.external, chat, "before")}
	postMessage(t, e.external, chat, longID)
	good = append(good, postMessage(t, e.external, chat, "between"))
	postMessage(t, e.external, chat, notUTF8)
	good = append(good, postMessage(t, e.external, chat, "after"))
	// The feed shows a change once every older transaction of the server
	// ended (its horizon): wait until it shows all six, so that the sync's
	// next poll gets them in one page.
	stacktest.WaitFor(t, time.Minute, "external's feed to show the six changes", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		changes, _, err := e.extStore.Changes(ctx, "", 100)
		if err == nil && len(changes) != 6 {
			err = fmt.Errorf("%d changes", len(changes))
		}
		return err
	})
	e.setFaults(`{` + poison + `}`)

	waitPublished := func(ids []string) {
		t.Helper()
		stacktest.WaitFor(t, time.Minute, fmt.Sprintf("messages %v of chat %s in Kafka", ids, chat), func() error {
			recs, err := records(map[string]bool{chat: true}, traces...)
			if err != nil {
				return err
			}
			seen := map[string]bool{}
			for _, r := range recs {
				seen[r.id] = true
			}
			for _, id := range append([]string{chat}, ids...) {
				if !seen[id] {
					return fmt.Errorf("%s not yet", id)
				}
			}
			return nil
		})
	}
	waitPublished(good)

	a := stacktest.Env(t, e.stack, devstack.EnvKafkaABootstrap)
	dead := deadLetters(t, a, chat, 2)
	for i, want := range []struct{ index, reason string }{
		{"3", "id of 10000 bytes, more than 128"}, // after chat.created, "before"
		{"5", "not valid UTF-8"},
	} {
		d := dead[i]
		h := map[string]string{}
		for _, kv := range d.Headers {
			h[kv.Key] = string(kv.Value)
		}
		if h[change.HeaderSourceIndex] != want.index || !strings.Contains(h[change.HeaderError], want.reason) ||
			h[change.HeaderKind] != "message.created" || h[change.HeaderWorker] != "w1" {
			t.Errorf("dead letter %d: headers %v, want index %s, a reason with %q, kind message.created, worker w1", i, h, want.index, want.reason)
		}
		if cursor, ok := h[change.HeaderSourceCursor]; !ok || cursor != "" {
			t.Errorf("dead letter %d: %s %q (set: %t), want the feed's start, \"\"", i, change.HeaderSourceCursor, cursor, ok)
		}
		t.Logf("dead letter %d: %s=%s %s=%q", i, change.HeaderError, h[change.HeaderError], change.HeaderSourceCursor, h[change.HeaderSourceCursor])
	}
	if v := dead[0].Value; !strings.Contains(string(v), `"id":"`+strings.Repeat("9", 10_000)+`"`) {
		t.Errorf("first dead letter's value %.120q…, want the change with its 10 kB ID", v)
	}
	if v := dead[1].Value; utf8.Valid(v) || !strings.Contains(string(v), "\"content\":\"bad \xff\xfe\"") {
		t.Errorf("second dead letter's value %q, want the change with its bytes as sent", v)
	}

	stacktest.WaitFor(t, 30*time.Second, "sync_dead_letters_total to count both", func() error {
		e.mu.Lock()
		url := e.metrics["w1"] + "/metrics"
		e.mu.Unlock()
		mfs, err := stacktest.ScrapeMetrics(url)
		if err != nil {
			return err
		}
		mf := mfs["sync_dead_letters_total"]
		if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetCounter().GetValue() != 2 {
			return fmt.Errorf("sync_dead_letters_total: %v", mf)
		}
		return nil
	})
	log, err := e.logOf("w1")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log, `"msg":"feed change dead-lettered"`); n != 2 {
		t.Errorf("%d log lines of dead letters, want 2 (one per change)", n)
	}
	if strings.Contains(log, strings.Repeat("9", 1000)) || strings.Contains(log, "bad \\ufffd") || strings.Contains(log, "bad \xff") {
		t.Error("the worker's log quotes a poison change")
	}

	// The sync keeps flowing.
	waitPublished(append(good, postMessage(t, e.external, chat, "later")))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Failure != "" || st.LastError != "" {
		t.Errorf("status %+v, want no failure, no error", st)
	}
}
