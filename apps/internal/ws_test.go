package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatpoc/chat-poc/apps/internal/cache"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

func msg(chat, id string, created, v int64, content string) change.Message {
	return chatdbtest.Msg(id, chat, created, v, content, false)
}

// TestLoadThenUpdatesInVersionOrder subscribes to a chat whose messages are
// partly in Postgres (the writer's) and partly only in Kafka: the load has
// both, newest version wins; then updates arrive in version order, an older
// version produced after a newer one is never pushed, and after unsub
// nothing of the chat is.
func TestLoadThenUpdatesInVersionOrder(t *testing.T) {
	t.Parallel()
	e := newAppEnv(t, nil)
	e.waitConsuming()
	chat := e.prefix + "-c"
	ctx := context.Background()
	// Stored by the writer: m1 v2, m2 v3.
	if _, err := e.db.Apply(ctx, "w@a", chatdb.Batch{
		Chats:    []change.Chat{chatdbtest.ChatNew(chat, 1)},
		Messages: []change.Message{msg(chat, "m1", 2, 2, "m1 v2"), msg(chat, "m2", 3, 3, "m2 v3")},
	}); err != nil {
		t.Fatal(err)
	}
	// Newer in Kafka than in Postgres: m2 v4; and m3 not stored yet.
	e.produceMessages(msg(chat, "m2", 3, 4, "m2 v4"), msg(chat, "m3", 5, 5, "m3 v5"))
	c := e.dial()
	// The consumer may not have handled them when the sub's load is read:
	// wait for the cache to have them (GET shares the load's code).
	waitFor(t, "the cached messages in the load", func() error {
		var got []change.Message
		if code := e.get("/chats/"+chat+"/messages", &got); code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		if len(got) != 3 || got[1].Version != 4 || got[2].ID != "m3" {
			return fmt.Errorf("messages %+v", got)
		}
		return nil
	})
	c.send(`{"type":"sub","id":"` + chat + `"}`)
	load := c.next()
	if load.Type != "load" || load.ChatID != chat || load.Deleted || len(load.Messages) != 3 ||
		load.Messages[0].Content != "m1 v2" || load.Messages[1].Content != "m2 v4" || load.Messages[2].Content != "m3 v5" {
		t.Fatalf("load = %+v; want m1 v2, m2 v4, m3 v5", load)
	}

	// Updates: v6, then an older v5 (a replay), then v7.
	e.produceMessages(msg(chat, "m1", 2, 6, "m1 v6"), msg(chat, "m1", 2, 5, "m1 v5 (stale)"), msg(chat, "m1", 2, 7, "m1 v7"))
	for _, want := range []string{"m1 v6", "m1 v7"} {
		f := c.next()
		if f.Type != "update" || len(f.Messages) != 1 || f.Messages[0].Content != want {
			t.Fatalf("frame %+v; want the update %q (and never the stale v5)", f, want)
		}
	}

	// After unsub, the chat's next change is not pushed; a change of
	// another chat the client subscribes to, produced after it on the same
	// partition (same key), is.
	other := e.prefix + "-d"
	c.send(`{"type":"sub","id":"` + other + `"}`)
	if f := c.next(); f.Type != "error" || f.ChatID != other {
		t.Fatalf("sub of a chat nothing is known of: %+v; want an error frame", f)
	}
	c.send(`{"type":"unsub","id":"` + chat + `"}`)
	late := msg(other, "x1", 8, 8, "other chat")
	e.produce(chatdbtest.Records(nil, e.cfg.MessageTopic, e.cfg.ChatTopic, []change.Message{msg(chat, "m1", 2, 9, "after unsub")}, nil))
	recs := chatdbtest.Records(nil, e.cfg.MessageTopic, e.cfg.ChatTopic, []change.Message{late}, nil)
	recs[0].Key = chat // the partition of the record before it
	e.produce(recs)
	if f := c.next(); f.Type != "update" || f.ChatID != other {
		t.Fatalf("after unsub: %+v; want only the other chat's update", f)
	}
}

// waitFor is stacktest.WaitFor for this package's tests.
func waitFor(t testing.TB, what string, check func() error) {
	t.Helper()
	end := time.Now().Add(time.Minute)
	var err error
	for time.Now().Before(end) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waited a minute for %s: %v", what, err)
}

// TestBadFramesCloseOnlyThatClient sends each kind of bad frame on a
// connection of its own: each is closed with its code; a well-behaved client
// on the same chat keeps getting updates.
func TestBadFramesCloseOnlyThatClient(t *testing.T) {
	t.Parallel()
	e := newAppEnv(t, nil)
	e.waitConsuming()
	chat := e.prefix + "-c"
	good := e.dial()
	good.send(`{"type":"sub","id":"` + chat + `"}`)
	good.next() // error: unknown chat (subscribed all the same)

	tests := []struct {
		name  string
		typ   websocket.MessageType
		data  []byte
		close websocket.StatusCode
	}{
		{"binary frame", websocket.MessageBinary, []byte{1, 2, 3}, websocket.StatusUnsupportedData},
		{"invalid JSON", websocket.MessageText, []byte(`{"type":`), websocket.StatusInvalidFramePayloadData},
		{"unknown type", websocket.MessageText, []byte(`{"type":"drop","id":"x"}`), websocket.StatusPolicyViolation},
		{"frame too large", websocket.MessageText, bytes.Repeat([]byte("x"), 8<<10), websocket.StatusMessageTooBig},
	}
	for _, tt := range tests {
		bad := e.dial()
		ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
		_ = bad.conn.Write(ctx, tt.typ, tt.data)
		_, _, err := bad.conn.Read(ctx)
		cancel()
		if got := websocket.CloseStatus(err); got != tt.close {
			t.Errorf("%s: closed with %v (%v), want %v", tt.name, got, err, tt.close)
		}
	}
	bad := e.dial()
	bad.send(`{"type":"sub","id":""}`)
	if f := bad.next(); f.Type != "error" {
		t.Errorf("sub without an id: %+v, want an error frame and the connection kept", f)
	}

	e.produceMessages(msg(chat, "m1", 1, 1, "still here"))
	if f := good.next(); f.Type != "update" || f.Messages[0].Content != "still here" {
		t.Fatalf("the good client got %+v, want the update", f)
	}
}

// TestSlowClientIsDroppedWithoutDelayingOthers subscribes a client that
// never reads and one that does to a chat, and pushes 1,000 updates of 8 KiB
// (more than the slow client's queue and socket buffers hold): the reader
// gets every update, and the slow client is closed with a policy violation.
func TestSlowClientIsDroppedWithoutDelayingOthers(t *testing.T) {
	t.Parallel()
	e := newAppEnv(t, nil)
	e.waitConsuming()
	chat := e.prefix + "-c"
	slow, fast := e.dial(), e.dial()
	for _, c := range []*wsConn{slow, fast} {
		c.send(`{"type":"sub","id":"` + chat + `"}`)
	}
	fast.next() // error: unknown chat
	const updates = 1000
	big := strings.Repeat("x", 8<<10)
	msgs := make([]change.Message, updates)
	for i := range msgs {
		msgs[i] = msg(chat, fmt.Sprintf("m%d", i), int64(i+1), int64(i+1), big)
	}
	e.produceMessages(msgs...)
	for i := range updates {
		if f := fast.next(); f.Type != "update" {
			t.Fatalf("update %d: %+v", i, f)
		}
	}
	// The slow client: its first frame (the error), maybe some updates,
	// then the close — a policy-violation close frame, or, when its socket
	// buffers stayed full for longer than the server's close handshake
	// waits (it never read), the connection cut without one. Either way
	// the server counted it as dropped for being slow.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	for err == nil {
		_, err = slow.read(ctx)
	}
	if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		t.Fatalf("slow client: %v (status %v), want closed with a policy violation or cut", err, got)
	}
	mfs, merr := stacktest.ScrapeMetrics(e.url + "/metrics")
	if merr != nil {
		t.Fatal(merr)
	}
	mf := mfs["internal_ws_slow_clients_dropped_total"]
	if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Fatalf("internal_ws_slow_clients_dropped_total = %v, want 1 (the slow client; the reader not)", mf)
	}
	t.Logf("slow client dropped: %v", err)
}

// TestForeignOriginIsRefused opens /ws from a page of another origin: 403.
func TestForeignOriginIsRefused(t *testing.T) {
	t.Parallel()
	e := newAppEnv(t, func(c *Config) { c.AllowedOrigins = "localhost:30002" })
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	url := "ws" + strings.TrimPrefix(e.url, "http") + "/ws"
	for _, tt := range []struct {
		origin string
		want   int
	}{
		{"http://evil.example", http.StatusForbidden},
		{"http://localhost:30002", http.StatusSwitchingProtocols},
	} {
		conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {tt.origin}}})
		if conn != nil {
			conn.CloseNow()
		}
		if resp == nil || resp.StatusCode != tt.want {
			t.Errorf("Origin %s: %v, %v; want %d", tt.origin, resp, err, tt.want)
		}
	}
}

// TestRESTReadsPostgresAndCache reads /chats and a chat's messages: the
// union of Postgres and the cache, 404 for a chat nothing is known of, 400
// for a bad id.
func TestRESTReadsPostgresAndCache(t *testing.T) {
	t.Parallel()
	e := newAppEnv(t, nil)
	e.waitConsuming()
	stored, live := e.prefix+"-stored", e.prefix+"-live"
	if _, err := e.db.Apply(context.Background(), "w@a", chatdb.Batch{
		Chats:    []change.Chat{chatdbtest.ChatNew(stored, 1)},
		Messages: []change.Message{msg(stored, "s1", 1, 1, "stored")},
	}); err != nil {
		t.Fatal(err)
	}
	e.produceChats(chatdbtest.ChatNew(live, 2))
	e.produceMessages(msg(live, "l1", 3, 3, "live"))
	waitFor(t, "both chats listed", func() error {
		var chats []struct{ ID string }
		e.get("/chats", &chats)
		seen := map[string]bool{}
		for _, c := range chats {
			seen[c.ID] = true
		}
		if !seen[stored] || !seen[live] {
			return fmt.Errorf("chats %v", chats)
		}
		return nil
	})
	waitFor(t, "the live chat's message", func() error {
		var got []change.Message
		if code := e.get("/chats/"+live+"/messages", &got); code != http.StatusOK || len(got) != 1 || got[0].Content != "live" {
			return fmt.Errorf("status %d, %+v", code, got)
		}
		return nil
	})
	if code := e.get("/chats/"+e.prefix+"-nothing/messages", nil); code != http.StatusNotFound {
		t.Errorf("unknown chat: %d, want 404", code)
	}
	if code := e.get("/chats/%01/messages", nil); code != http.StatusBadRequest {
		t.Errorf("bad chat id: %d, want 400", code)
	}
}

// TestRedisOutageKeepsUpdatesFlowing cuts the app's connection to Redis (a
// proxy in front of the shared one): updates keep being pushed (memory
// decides), stale ones still are not, /readyz says degraded; when Redis is
// back the cache is rebuilt with what was seen meanwhile.
func TestRedisOutageKeepsUpdatesFlowing(t *testing.T) {
	t.Parallel()
	var p *proxy
	var redisAddr string
	e := newAppEnv(t, func(c *Config) {
		redisAddr = c.RedisAddr
		p = newProxy(t, c.RedisAddr)
		c.RedisAddr = p.addr
	})
	e.waitConsuming()
	chat := e.prefix + "-c"
	c := e.dial()
	c.send(`{"type":"sub","id":"` + chat + `"}`)
	c.next() // error: unknown chat

	p.down()
	e.produceMessages(msg(chat, "m1", 1, 2, "v2"), msg(chat, "m1", 1, 1, "v1 (stale)"), msg(chat, "m1", 1, 3, "v3"))
	for _, want := range []string{"v2", "v3"} {
		if f := c.next(); f.Type != "update" || f.Messages[0].Content != want {
			t.Fatalf("during the outage: %+v, want the update %q", f, want)
		}
	}
	waitFor(t, "/readyz to report degraded", func() error {
		resp, err := http.Get(e.url + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b := new(bytes.Buffer)
		_, _ = b.ReadFrom(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(b.String(), "degraded") {
			return fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		return nil
	})

	p.up()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rdb.Close() })
	rdbCache := cache.New(rdb, time.Hour, e.cfg.Group)
	waitFor(t, "the cache to be rebuilt", func() error {
		v, err := rdbCache.Version(context.Background(), chat, "m1")
		if err != nil {
			return err
		}
		if v != 3 {
			return fmt.Errorf("cached version %d", v)
		}
		return nil
	})
	e.produceMessages(msg(chat, "m1", 1, 4, "v4"))
	if f := c.next(); f.Type != "update" || f.Messages[0].Content != "v4" {
		t.Fatalf("after the outage: %+v, want v4", f)
	}
	if e.app.consumer.RedisDown() {
		t.Error("the consumer still counts Redis as down")
	}
}

// TestEveryInstancePushesToItsClients runs two instances (two consumer
// groups) on the same topics and the same Redis: a client of each gets
// every change, whichever instance consumed it first. (With one shared
// compare-and-set, the second instance would find the version cached and
// push nothing.)
func TestEveryInstancePushesToItsClients(t *testing.T) {
	t.Parallel()
	first := configureEnv(t, nil)
	second := *first
	second.cfg.Group += "-2"
	second.cfg.Identity += "-2"
	first.startInProcess()
	second.startInProcess()
	first.waitConsuming()
	second.waitConsuming()
	chat := first.prefix + "-c"
	clients := []*wsConn{first.dial(), second.dial()}
	for _, c := range clients {
		c.send(`{"type":"sub","id":"` + chat + `"}`)
		c.nextOf(chat) // error: unknown chat (subscribed)
	}
	first.produceMessages(msg(chat, "m1", 1, 1, "v1"), msg(chat, "m1", 1, 2, "v2"))
	for i, c := range clients {
		for _, want := range []string{"v1", "v2"} {
			if f := c.nextOf(chat); f.Type != "update" || f.Messages[0].Content != want {
				t.Fatalf("client of instance %d: %+v, want the update %q", i+1, f, want)
			}
		}
	}
}

// TestRedisEmptiedDoesNotPushOlderVersions empties the instance's cache (as
// a Redis restart without persistence would) between a version and a late
// duplicate of an older one: the older one is still not pushed, the next
// newer one is.
func TestRedisEmptiedDoesNotPushOlderVersions(t *testing.T) {
	t.Parallel()
	e := newAppEnv(t, nil)
	e.waitConsuming()
	chat := e.prefix + "-c"
	c := e.dial()
	c.send(`{"type":"sub","id":"` + chat + `"}`)
	c.nextOf(chat) // error: unknown chat (subscribed)
	e.produceMessages(msg(chat, "m1", 1, 2, "v2"))
	if f := c.nextOf(chat); f.Type != "update" || f.Messages[0].Content != "v2" {
		t.Fatalf("first update: %+v", f)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.cfg.RedisAddr})
	t.Cleanup(func() { rdb.Close() })
	keys, err := rdb.Keys(context.Background(), e.cfg.Group+":*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("the instance's keys: %v, %v", keys, err)
	}
	if err := rdb.Del(context.Background(), keys...).Err(); err != nil {
		t.Fatal(err)
	}
	e.produceMessages(msg(chat, "m1", 1, 1, "v1 (late duplicate)"), msg(chat, "m1", 1, 3, "v3"))
	if f := c.nextOf(chat); f.Type != "update" || f.Messages[0].Content != "v3" {
		t.Fatalf("after the cache was emptied: %+v, want v3 (never the older v1)", f)
	}
}
