package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
	"github.com/chatpoc/chat-poc/internal/logging"
)

// frameTimeout bounds waiting for one expected frame.
const frameTimeout = 15 * time.Second

// appEnv is one test's internal app on the shared stack: a fresh database
// (migrated, as the writer would), its own topics on Kafka a and its own
// consumer group, the stack's Redis (keys are per chat ID, and chat IDs
// are the test's own), an httptest server.
type appEnv struct {
	t        testing.TB
	cfg      Config
	db       *chatdb.DB
	pool     *pgxpool.Pool
	producer *kafka.Producer
	prefix   string
	app      *app
	url      string
}

// newAppEnv starts an app in the test process; edit changes the
// configuration first (nil: none).
func newAppEnv(t testing.TB, edit func(*Config)) *appEnv {
	t.Helper()
	e := configureEnv(t, edit)
	e.startInProcess()
	return e
}

// configureEnv makes a test's database, topics and configuration.
func configureEnv(t testing.TB, edit func(*Config)) *appEnv {
	t.Helper()
	stack := stacktest.Connect(t)
	dsn, db, pool := chatdbtest.NewDB(t)
	name := stacktest.UniqueName("i")
	bootstrap := stacktest.Env(t, stack, devstack.EnvKafkaABootstrap)
	e := &appEnv{t: t, db: db, pool: pool, prefix: name, producer: stacktest.NewProducer(t, bootstrap)}
	e.cfg = Config{
		PGDSN: dsn, PGMaxConns: 4, RedisAddr: stacktest.Env(t, stack, devstack.EnvRedisAddr), CacheTTL: time.Hour,
		MemoryBytes:    32 << 20,
		KafkaBootstrap: bootstrap, Group: name + "-internal",
		MessageTopic: name + "-messages", ChatTopic: name + "-chats",
		Identity: name, LogLevel: "warn", StallAfter: 15 * time.Second, DeadAfter: time.Minute,
		PageSize: 200, WSMaxClients: 2000, WSRequestRate: 10,
	}
	if edit != nil {
		edit(&e.cfg)
	}
	stacktest.CreateTopics(t, bootstrap, 2, e.cfg.MessageTopic, e.cfg.ChatTopic)
	return e
}

// startInProcess runs the app in the test process behind an httptest
// server, stopped when the test ends.
func (e *appEnv) startInProcess() {
	t := e.t
	t.Helper()
	log, err := logging.New(e.cfg.LogLevel, "identity", e.cfg.Identity)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(e.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	e.app = a
	srv := httptest.NewServer(a.server)
	e.url = srv.URL
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.consumer.Run(ctx) }()
	watched := make(chan struct{})
	go func() { a.watchdog.Run(ctx); close(watched) }()
	lagDone := make(chan struct{})
	go func() { a.lag.Run(ctx); close(lagDone) }()
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("live consumer: %v", err)
		}
		<-watched
		<-lagDone
		a.close()
	})
}

// startProcess runs the app as a process of the internal binary, and waits
// until it is ready.
func (e *appEnv) startProcess(ps *stacktest.Procs) *stacktest.Proc {
	e.t.Helper()
	addr := stacktest.FreeAddr(e.t)
	c := e.cfg
	p := ps.Start(c.Identity,
		"INTERNAL_LISTEN_ADDR="+addr, "PG_INTERNAL_DSN="+c.PGDSN, "REDIS_ADDR="+c.RedisAddr,
		"KAFKA_BOOTSTRAP="+c.KafkaBootstrap, "INTERNAL_GROUP="+c.Group,
		"KAFKA_MESSAGE_TOPIC="+c.MessageTopic, "KAFKA_CHAT_TOPIC="+c.ChatTopic,
		"INTERNAL_IDENTITY="+c.Identity, "LOG_LEVEL="+c.LogLevel,
		"INTERNAL_PAGE_SIZE="+strconv.Itoa(c.PageSize), "INTERNAL_WS_MAX_CLIENTS="+strconv.Itoa(c.WSMaxClients),
		"INTERNAL_WS_REQUEST_RATE="+strconv.FormatFloat(c.WSRequestRate, 'g', -1, 64))
	e.url = "http://" + addr
	stacktest.WaitFor(e.t, time.Minute, "the app to be ready", func() error {
		resp, err := http.Get(e.url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	return p
}

// waitConsuming waits until the app's consumer has its partitions and has
// handled a probe record: with a new group starting at the newest records,
// what the test produces after this is seen.
func (e *appEnv) waitConsuming() {
	e.t.Helper()
	probe := chatdbtest.ChatNew(e.prefix+"-probe", 1)
	c := e.dial()
	c.send(`{"type":"sub","id":"` + probe.ID + `"}`)
	c.next() // the error (unknown chat): subscribed now
	frames := c.frames()
	defer c.conn.CloseNow()
	stacktest.WaitFor(e.t, time.Minute, "the app to consume", func() error {
		e.produceChats(probe)
		probe.Version++ // a retry must be a new version to be pushed
		timeout := time.After(time.Second)
		for {
			select {
			case f, ok := <-frames:
				if !ok {
					return errors.New("probe connection closed")
				}
				if f.Type == "newChat" && f.ChatID == probe.ID {
					return nil
				}
			case <-timeout:
				return errors.New("no newChat for the probe within a second")
			}
		}
	})
}

// insertMessages stores chat and n messages of it in the app's database,
// as the writer would have (COPY, fast enough for 100,000): message i is
// "<chat>-m<i>", created i/2 ms after chatdbtest.T0 (two messages share each
// creation time), version i+1. It returns them in display order.
func (e *appEnv) insertMessages(chat string, n int) []change.Message {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.db.Apply(ctx, "test", chatdb.Batch{Chats: []change.Chat{chatdbtest.ChatNew(chat, 1)}}); err != nil {
		e.t.Fatal(err)
	}
	msgs := make([]change.Message, n)
	rows := make([][]any, n)
	for i := range msgs {
		m := chatdbtest.Msg(fmt.Sprintf("%s-m%d", chat, i), chat, int64(i/2), int64(i+1), fmt.Sprintf("message %d", i), false)
		msgs[i] = m
		rows[i] = []any{m.ID, m.ChatID, m.Content, m.CreatedAt, m.UpdatedAt, m.IsDeleted, m.Version}
	}
	if _, err := e.pool.CopyFrom(ctx, pgx.Identifier{"messages"},
		[]string{"id", "chat_id", "content", "created_at", "updated_at", "is_deleted", "version"},
		pgx.CopyFromRows(rows)); err != nil {
		e.t.Fatalf("copy %d messages: %v", n, err)
	}
	slices.SortFunc(msgs, chatdb.Compare)
	return msgs
}

func (e *appEnv) produceMessages(msgs ...change.Message) {
	e.t.Helper()
	e.produce(chatdbtest.Records(nil, e.cfg.MessageTopic, e.cfg.ChatTopic, msgs, nil))
}

func (e *appEnv) produceChats(chats ...change.Chat) {
	e.t.Helper()
	e.produce(chatdbtest.Records(nil, e.cfg.MessageTopic, e.cfg.ChatTopic, nil, chats))
}

func (e *appEnv) produce(recs []stacktest.Record) {
	e.t.Helper()
	if err := stacktest.Produce(e.producer, recs, len(recs), 0); err != nil {
		e.t.Fatal(err)
	}
}

// frame is one server → client frame.
type frame struct {
	Type     string           `json:"type"`
	ChatID   string           `json:"chatId"`
	Messages []change.Message `json:"messages"`
	Deleted  bool             `json:"deleted"`
	Error    string           `json:"error"`
	Code     string           `json:"code"`
	Request  string           `json:"request"`
	HasMore  bool             `json:"hasMore"`
	Before   string           `json:"before"`
}

type wsConn struct {
	t    testing.TB
	conn *websocket.Conn
}

func (e *appEnv) dial() *wsConn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+"/ws", nil)
	if err != nil {
		e.t.Fatalf("dial /ws: %v", err)
	}
	conn.SetReadLimit(1 << 20)
	e.t.Cleanup(func() { conn.CloseNow() })
	return &wsConn{t: e.t, conn: conn}
}

func (c *wsConn) send(v string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(v)); err != nil {
		c.t.Fatalf("write %s: %v", v, err)
	}
}

func (c *wsConn) read(ctx context.Context) (frame, error) {
	_, data, err := c.conn.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		return frame{}, err
	}
	return f, nil
}

// frames reads c's frames in the background until the connection ends
// (then closes the channel): a read whose context ends closes the
// connection, so a test waits on the channel instead.
func (c *wsConn) frames() <-chan frame {
	out := make(chan frame, 64)
	go func() {
		defer close(out)
		for {
			f, err := c.read(context.Background())
			if err != nil {
				return
			}
			out <- f
		}
	}()
	return out
}

// next reads the next frame, failing the test if none comes in time.
func (c *wsConn) next() frame {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	f, err := c.read(ctx)
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

// nextOf reads frames until one about chat chatID, skipping others (the
// newChat frames of another instance's probes, say).
func (c *wsConn) nextOf(chatID string) frame {
	c.t.Helper()
	for {
		if f := c.next(); f.ChatID == chatID {
			return f
		}
	}
}

// get GETs path and decodes the JSON answer into v; it returns the status.
func (e *appEnv) get(path string, v any) int {
	e.t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(e.url + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			e.t.Fatalf("GET %s: %v in %s", path, err, b)
		}
	}
	return resp.StatusCode
}

// proxy is a TCP proxy to a server, which a test can cut and restore: a
// Redis outage for one app, while the shared Redis serves everyone else.
type proxy struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]struct{}
}

func newProxy(t testing.TB, target string) *proxy {
	p := &proxy{t: t, target: target, addr: stacktest.FreeAddr(t), conns: map[net.Conn]struct{}{}}
	p.up()
	t.Cleanup(p.down)
	return p
}

// up listens again on the proxy's address.
func (p *proxy) up() {
	p.t.Helper()
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *proxy) pipe(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(s, c); s.Close() }()
	_, _ = io.Copy(c, s)
	c.Close()
}

// down stops listening and cuts every connection.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}
