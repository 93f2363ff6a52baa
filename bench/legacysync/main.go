// Command legacysync is a bench-only reimplementation of the original proof
// of concept's synchronizer, the baseline our Temporal sync is measured
// against (BENCHMARKS.md, section "Baseline"). Like the original it is fed
// by the external service's WebSocket subscription, not by its change feed,
// and forwards what it is pushed to Kafka, in one of the original's two
// designs:
//
//   - lease: replicas elect a leader with a Redis lease (SET NX PX, renewed
//     at TTL/2 by a compare-and-expire script); only the leader forwards,
//     so changes pushed while no replica holds the lease — from a leader's
//     death until its lease expires and another takes it — are lost;
//   - all: the original's final state, election disabled: every replica
//     forwards everything (downstream deduplicates by version).
//
// On every (re)connection a forwarding replica subscribes to each chat and
// forwards the loads it gets — the original's "Kafka is bombed with
// messages whenever a synchronizer starts" — as snapshot records.
//
// Each record's value is the change it carries, e.g. "msg:<id>@<version>",
// "msg-deleted:<id>", "chat:<id>", "chat-deleted:<id>"; its headers say
// which replica sent it and whether it came from a snapshot.
//
//	LEGACY_MODE=lease EXTERNAL_URL=http://127.0.0.1:30001 KAFKA_BOOTSTRAP=127.0.0.1:9092 \
//	  LEGACY_TOPIC=legacy REDIS_ADDR=127.0.0.1:6379 LEGACY_IDENTITY=r1 legacysync
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/redis/go-redis/v9"

	"github.com/chatpoc/chat-poc/internal/envconfig"
	"github.com/chatpoc/chat-poc/internal/service"
)

// Config is the baseline's configuration, read from these environment
// variables.
type Config struct {
	Mode      string        `env:"LEGACY_MODE" default:"lease" doc:"lease (a Redis-lease leader forwards) or all (every replica forwards)"`
	External  string        `env:"EXTERNAL_URL" required:"true" doc:"base URL of the external service"`
	Bootstrap string        `env:"KAFKA_BOOTSTRAP" required:"true" doc:"Kafka bootstrap servers"`
	Topic     string        `env:"LEGACY_TOPIC" required:"true" doc:"topic to forward to"`
	RedisAddr string        `env:"REDIS_ADDR" doc:"Redis host:port (mode lease)"`
	LeaseKey  string        `env:"LEGACY_LEASE_KEY" default:"legacysync-leader" doc:"Redis key of the lease (mode lease)"`
	LeaseTTL  time.Duration `env:"LEGACY_LEASE_TTL" default:"3s" doc:"lease time to live; renewed every TTL/2 (mode lease)"`
	Identity  string        `env:"LEGACY_IDENTITY" doc:"this replica's name; empty: hostname:pid"`
}

func main() {
	service.Main("legacysync", func(ctx context.Context, log *slog.Logger) error {
		var cfg Config
		if err := envconfig.Load(&cfg); err != nil {
			return err
		}
		if cfg.Identity == "" {
			host, _ := os.Hostname()
			cfg.Identity = fmt.Sprintf("%s:%d", host, os.Getpid())
		}
		return run(ctx, cfg, log.With("identity", cfg.Identity, "mode", cfg.Mode))
	})
}

func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	producer, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers": cfg.Bootstrap, "acks": "all", "enable.idempotence": true,
		"linger.ms": 5, "client.id": cfg.Identity,
	})
	if err != nil {
		return fmt.Errorf("kafka producer: %w", err)
	}
	defer producer.Close()
	go func() {
		for e := range producer.Events() {
			if m, ok := e.(*kafka.Message); ok && m.TopicPartition.Error != nil {
				log.Error("record not delivered", "err", m.TopicPartition.Error)
			}
		}
	}()

	forwarding := func() bool { return true }
	switch cfg.Mode {
	case "all":
	case "lease":
		if cfg.RedisAddr == "" {
			return errors.New("REDIS_ADDR is required in mode lease")
		}
		rdb := redis.NewClient(&redis.Options{Addr: cfg.RedisAddr})
		defer rdb.Close()
		l := &lease{rdb: rdb, key: cfg.LeaseKey, me: cfg.Identity, ttl: cfg.LeaseTTL, log: log}
		go l.run(ctx)
		forwarding = l.held
	default:
		return fmt.Errorf("LEGACY_MODE %q: want lease or all", cfg.Mode)
	}

	f := &forwarder{cfg: cfg, producer: producer, forwarding: forwarding, log: log}
	for ctx.Err() == nil {
		err := f.session(ctx)
		if ctx.Err() != nil {
			break
		}
		log.Warn("websocket session ended; reconnecting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	producer.Flush(5000)
	return nil
}

// lease is the original's leader election: SET NX PX to take the lease,
// a compare-and-expire script every TTL/2 to keep it.
type lease struct {
	rdb  *redis.Client
	key  string
	me   string
	ttl  time.Duration
	log  *slog.Logger
	mine atomic.Bool
}

var renew = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`)

func (l *lease) held() bool { return l.mine.Load() }

func (l *lease) run(ctx context.Context) {
	tick := time.NewTicker(l.ttl / 2)
	defer tick.Stop()
	for {
		octx, cancel := context.WithTimeout(ctx, l.ttl/2)
		if l.mine.Load() {
			n, err := renew.Run(octx, l.rdb, []string{l.key}, l.me, l.ttl.Milliseconds()).Int()
			if err != nil || n == 0 {
				l.mine.Store(false)
				l.log.Warn("lease lost", "err", err)
			}
		} else {
			ok, err := l.rdb.SetNX(octx, l.key, l.me, l.ttl).Result()
			if err == nil && ok {
				l.mine.Store(true)
				l.log.Info("lease taken: forwarding")
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// forwarder turns the external service's WebSocket frames into records.
type forwarder struct {
	cfg        Config
	producer   *kafka.Producer
	forwarding func() bool
	log        *slog.Logger
}

// frame is an external WebSocket frame.
type frame struct {
	Type     string `json:"type"`
	ChatID   string `json:"chatId"`
	Messages []struct {
		ID        string `json:"id"`
		IsDeleted bool   `json:"isDeleted"`
		Version   int64  `json:"version"`
	} `json:"messages"`
}

// session subscribes to every chat's changes, then to each existing chat
// (whose loads are the snapshot), and forwards until the connection ends.
func (f *forwarder) session(ctx context.Context) error {
	base := strings.TrimSuffix(f.cfg.External, "/")
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(16 << 20)
	send := func(v any) error {
		b, _ := json.Marshal(v)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return conn.Write(wctx, websocket.MessageText, b)
	}
	if err := send(map[string]string{"type": "sub", "id": ""}); err != nil {
		return err
	}
	chats, err := listChats(ctx, base)
	if err != nil {
		return err
	}
	for _, id := range chats {
		if err := send(map[string]string{"type": "sub", "id": id}); err != nil {
			return err
		}
	}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		var fr frame
		if err := json.Unmarshal(data, &fr); err != nil {
			f.log.Warn("unreadable frame", "err", err)
			continue
		}
		f.forward(fr)
	}
}

func (f *forwarder) forward(fr frame) {
	if !f.forwarding() {
		return
	}
	var changes []string
	switch fr.Type {
	case "newChat":
		changes = append(changes, "chat:"+fr.ChatID)
	case "delete":
		changes = append(changes, "chat-deleted:"+fr.ChatID)
	case "update", "load":
		for _, m := range fr.Messages {
			changes = append(changes, fmt.Sprintf("msg:%s@%d", m.ID, m.Version))
			if m.IsDeleted {
				changes = append(changes, "msg-deleted:"+m.ID)
			}
		}
	}
	snapshot := "false"
	if fr.Type == "load" {
		snapshot = "true"
	}
	for _, c := range changes {
		err := f.producer.Produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &f.cfg.Topic, Partition: kafka.PartitionAny},
			Key:            []byte(fr.ChatID),
			Value:          []byte(c),
			Headers: []kafka.Header{
				{Key: "source", Value: []byte(f.cfg.Identity)},
				{Key: "snapshot", Value: []byte(snapshot)},
			},
		}, nil)
		if err != nil {
			f.log.Error("produce", "err", err)
		}
	}
}

// listChats returns the ids of external's chats.
func listChats(ctx context.Context, base string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/chats", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("list chats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("list chats: %s", resp.Status)
	}
	var ids []string
	if err := json.NewDecoder(resp.Body).Decode(&ids); err != nil {
		return nil, fmt.Errorf("list chats: %w", err)
	}
	return ids, nil
}
