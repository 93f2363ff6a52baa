// Command internal is our chat app: an Echo backend and browser UI that
// list the synced chats and show their messages live over WebSocket. Each
// instance consumes every change from Kafka (a consumer group of its own,
// stable across restarts), pushes a change only if Redis's version
// compare-and-set says it is new, and loads a chat from Postgres ∪ Redis.
// Configuration is read from the environment (see Config).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"go.temporal.io/sdk/client"
	temporallog "go.temporal.io/sdk/log"
	"golang.org/x/sync/errgroup"

	"github.com/chatpoc/chat-poc/apps/internal/api"
	"github.com/chatpoc/chat-poc/apps/internal/cache"
	"github.com/chatpoc/chat-poc/apps/internal/live"
	"github.com/chatpoc/chat-poc/apps/internal/web"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/kafkaclient"
	"github.com/chatpoc/chat-poc/internal/service"
	"github.com/chatpoc/chat-poc/internal/watchdog"
)

// Config is the app's configuration, read from these environment variables.
type Config struct {
	ListenAddr        string        `env:"INTERNAL_LISTEN_ADDR" default:"127.0.0.1:30002" doc:"host:port of the UI, the API, /ws, /metrics, /healthz and /readyz"`
	AllowedOrigins    string        `env:"INTERNAL_ALLOWED_ORIGINS" doc:"comma-separated host patterns (e.g. localhost:30002) of other origins whose pages may open /ws; same-origin pages always may"`
	PGDSN             string        `env:"PG_INTERNAL_DSN" required:"true" secret:"true" doc:"the internal database, read only; region b lists its standby first with target_session_attrs=prefer-standby"`
	PGMaxConns        int           `env:"INTERNAL_PG_MAX_CONNS" default:"8" doc:"most Postgres connections"`
	RedisAddr         string        `env:"REDIS_ADDR" required:"true" doc:"host:port of Redis"`
	RedisPassword     string        `env:"REDIS_PASSWORD" secret:"true" doc:"Redis password; empty: none"`
	CacheTTL          time.Duration `env:"INTERNAL_CACHE_TTL" default:"5m" doc:"how long a cached version lives after its last write: the window between Kafka and Postgres it must cover (the writer's lag, internal_cache_postgres_behind_seconds, must stay well below it)"`
	MemoryBytes       int64         `env:"INTERNAL_MEMORY_MESSAGE_BYTES" default:"33554432" doc:"bound in bytes of the messages (written within INTERNAL_CACHE_TTL) that the in-process stand-in for Redis holds (32 MiB; least recently written forgotten first)"`
	KafkaBootstrap    string        `env:"KAFKA_BOOTSTRAP" required:"true" doc:"bootstrap servers of this region's Kafka cluster"`
	Group             string        `env:"INTERNAL_GROUP" required:"true" doc:"this instance's own consumer group and Redis namespace, stable across restarts (on Kubernetes the StatefulSet pod name): a restart resumes where it stopped and does not push again what it pushed"`
	MessageTopic      string        `env:"KAFKA_MESSAGE_TOPIC" default:"chat-messages" doc:"topic of message records (its mirrored copies are read too)"`
	ChatTopic         string        `env:"KAFKA_CHAT_TOPIC" default:"chats" doc:"topic of chat records (and its mirrored copies)"`
	TemporalAddress   string        `env:"TEMPORAL_ADDRESS" doc:"host:port of the Temporal frontend, for the sync's status line; empty: no status"`
	TemporalNamespace string        `env:"TEMPORAL_NAMESPACE" default:"default" doc:"Temporal namespace of the sync workflow"`
	Identity          string        `env:"INTERNAL_IDENTITY" doc:"this instance's name in logs and its Kafka client.id; empty: hostname:pid"`
	KafkaDebug        string        `env:"KAFKA_DEBUG" doc:"librdkafka debug contexts (e.g. cgrp,fetch,broker or all), logged at info; empty: none"`
	StallAfter        time.Duration `env:"INTERNAL_STALL_AFTER" default:"15s" doc:"how long records may wait unconsumed (committed in Kafka, the live consumer's position not moving) before /readyz fails and the UI shows stalled"`
	DeadAfter         time.Duration `env:"INTERNAL_DEAD_AFTER" default:"1m" doc:"how long before /healthz fails too, so that the supervisor restarts the instance"`
	LogLevel          string        `env:"LOG_LEVEL" default:"info" doc:"debug, info, warn or error"`
	PageSize          int           `env:"INTERNAL_PAGE_SIZE" default:"200" doc:"most messages in a chat's load and in each older page (and at most 256 KiB of them)"`
	WSMaxClients      int           `env:"INTERNAL_WS_MAX_CLIENTS" default:"2000" doc:"most WebSocket connections of the instance; beyond, the handshake gets 503 with Retry-After; 0: no cap"`
	WSRequestRate     float64       `env:"INTERNAL_WS_REQUEST_RATE" default:"10" doc:"subs and older pages per second one WebSocket connection may ask (bursts of 100, its most subscriptions); beyond, an error frame with code rateLimited; 0: no limit"`
}

// shutdownTimeout bounds draining HTTP requests on SIGTERM (WebSockets are
// closed with "going away" and the browsers reconnect elsewhere). With the
// consumer's close (live.closeTimeout, in parallel) it stays within the 20 s
// the local launcher grants (the Kubernetes manifests, 30 s).
const shutdownTimeout = 10 * time.Second

func main() { service.Main("internal", run) }

func run(ctx context.Context, log *slog.Logger) error {
	var cfg Config
	log, err := service.Configure(&cfg, "internal", &cfg.Identity, &cfg.LogLevel)
	if err != nil {
		return err
	}

	app, err := newApp(cfg, log)
	if err != nil {
		return err
	}
	defer app.close()
	httpSrv := &http.Server{
		Addr:              cfg.ListenAddr,
		Handler:           app.server,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute, // WebSockets are hijacked and not subject to it
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	g, gctx := errgroup.WithContext(ctx)
	service.Serve(gctx, g, httpSrv, shutdownTimeout, log)
	g.Go(func() error { return app.consumer.Run(gctx) })
	g.Go(func() error { app.status.Run(gctx); return nil })
	g.Go(func() error { app.lag.Run(gctx); return nil })
	g.Go(func() error { app.watchdog.Run(gctx); return nil })
	return g.Wait()
}

// app is the wired application.
type app struct {
	server   *api.Server
	consumer *live.Consumer
	status   *api.SyncStatus
	lag      *live.PostgresLag
	watchdog *watchdog.Watchdog
	kafka    *kafka.Consumer // the live consumer's client (tests stop its fetches)
	closers  []func()
}

func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// newApp connects the app's clients (lazily: nothing here waits for a
// server) and wires the live path to the WebSocket hub.
func newApp(cfg Config, log *slog.Logger) (*app, error) {
	if cfg.CacheTTL <= 0 || cfg.MemoryBytes <= 0 {
		return nil, errors.New("configuration: INTERNAL_CACHE_TTL and INTERNAL_MEMORY_MESSAGE_BYTES must be positive")
	}
	a := &app{}
	if cfg.PageSize < 1 || cfg.WSMaxClients < 0 || cfg.WSRequestRate < 0 {
		return nil, errors.New("configuration: INTERNAL_PAGE_SIZE must be at least 1, INTERNAL_WS_MAX_CLIENTS and INTERNAL_WS_REQUEST_RATE at least 0")
	}
	pc, err := pgxpool.ParseConfig(cfg.PGDSN)
	if err != nil {
		return nil, errors.New("configuration: PG_INTERNAL_DSN is not a valid Postgres connection string")
	}
	pc.MaxConns = int32(max(cfg.PGMaxConns, 1))
	pc.ConnConfig.RuntimeParams["application_name"] = "internal-" + cfg.Identity
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("Postgres pool: %w", err)
	}
	a.closers = append(a.closers, pool.Close)
	rdb := redis.NewClient(&redis.Options{Addr: cfg.RedisAddr, Password: cfg.RedisPassword})
	a.closers = append(a.closers, func() { _ = rdb.Close() })
	c := cache.New(rdb, cfg.CacheTTL, cfg.Group)

	var tc client.Client
	if cfg.TemporalAddress != "" {
		tc, err = client.NewLazyClient(client.Options{
			HostPort: cfg.TemporalAddress, Namespace: cfg.TemporalNamespace, Identity: "internal-" + cfg.Identity,
			Logger: temporallog.NewStructuredLogger(log.With("component", "temporal-sdk")),
		})
		if err != nil {
			a.close()
			return nil, fmt.Errorf("configuration: TEMPORAL_ADDRESS: %w", err)
		}
		a.closers = append(a.closers, tc.Close)
	}
	a.status = api.NewSyncStatus(tc, log)

	consumer, err := newConsumer(cfg, log)
	if err != nil {
		a.close()
		return nil, fmt.Errorf("configuration: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	topics := change.NewTopics(cfg.MessageTopic, cfg.ChatTopic)
	mem := live.NewMemory(cfg.CacheTTL, cfg.MemoryBytes, live.DefaultChatBytes, reg)
	db := chatdb.New(pool)
	lag := live.NewPostgresLag(db, cfg.CacheTTL, reg, log)
	a.lag = lag
	// The server asks the consumer and its watchdog, made below with the
	// server's hub.
	a.server = api.New(db, c, mem, func() bool { return a.consumer.RedisDown() }, a.status, web.FS(), reg,
		api.Config{
			AllowedOrigins: splitList(cfg.AllowedOrigins),
			Ready:          readiness(pool, rdb, consumer, func() error { return a.watchdog.Stalled() }),
			Stalled:        func() error { return a.watchdog.Stalled() },
			Live:           func() error { return a.watchdog.Dead() },
			PageSize:       cfg.PageSize,
			MaxClients:     cfg.WSMaxClients,
			RequestRate:    cfg.WSRequestRate,
		}, log)
	a.consumer = live.NewConsumer(consumer, cfg.Group, topics, c, mem, lag, a.server.Hub(), live.NewMetrics(reg), log)
	a.kafka = consumer

	// The watchdog: every partition of the change topics is this
	// instance's (its group is its own), so a record committed on any of
	// them and not consumed within StallAfter is a stall.
	progress, err := kafkaclient.NewProgress(consumer, kafkaclient.ProgressOptions{
		Bootstrap: cfg.KafkaBootstrap, ClientID: "internal-" + cfg.Identity + "-watchdog",
		Match:  func(topic string) bool { _, _, ok := topics.Parse(topic); return ok },
		All:    true,
		Outage: a.consumer.Outage(),
		Polled: a.consumer.Polled,
	})
	if err != nil {
		a.close()
		return nil, fmt.Errorf("configuration: %w", err)
	}
	a.closers = append(a.closers, progress.Close)
	a.watchdog, err = watchdog.New(progress.Probe, watchdog.Options{
		Name: "live-consumer", Every: watchdog.DefaultEvery, ProbeTimeout: watchdog.DefaultProbeTimeout,
		StallAfter: cfg.StallAfter, DeadAfter: cfg.DeadAfter,
	}, watchdog.NewMetrics(reg, "internal"), log)
	if err != nil {
		a.close()
		return nil, fmt.Errorf("configuration: INTERNAL_STALL_AFTER, INTERNAL_DEAD_AFTER: %w", err)
	}
	return a, nil
}

// newConsumer creates the instance's consumer: its own group with static
// membership (a restart takes its partitions back at once), offsets
// committed after their records were handled. A new group starts at the
// newest records (clients load history from the database): live.Consumer
// commits the ends of the topics for it before it joins, and a partition
// without a committed offset, one created since, is read from its
// beginning (auto.offset.reset=earliest; "latest" skipped the records
// written to a partition the group had never consumed from while the
// consumer was out of its group: issue 15).
//
// After an outage the consumer reconnects within reconnect.backoff.max.ms
// (1 s instead of librdkafka's 10 s: the rejoin, and the next record,
// waited up to 10 s after the cluster was back), and a rebalance that does
// not complete is abandoned after max.poll.interval.ms (the rebalance
// timeout; 30 s instead of 5 min: the loop polls every 100 ms).
//
// A static member can be fenced by itself: after an outage longer than the
// session timeout librdkafka rejoins "blind" (without its member id), and
// when the coordinator also processes an earlier attempt of the same
// client, the later join fences the other: FENCED_INSTANCE_ID, a fatal
// error (issue 15). live.Consumer.Run then logs it and returns, its close
// bounded (confluent-kafka-go v2.11.1's Close never returns after a fatal
// error), and the process exits to be restarted; its successor takes the
// partitions back at once. (A dynamic member cannot be fenced, but a
// restart after a crash then waited for the dead member's session: the
// browser test that kills the instance saw no update for 16 s.)
func newConsumer(cfg Config, log *slog.Logger) (*kafka.Consumer, error) {
	cm := &kafka.ConfigMap{
		"bootstrap.servers":                  cfg.KafkaBootstrap,
		"group.id":                           cfg.Group,
		"group.instance.id":                  cfg.Group,
		"client.id":                          "internal-" + cfg.Identity,
		"isolation.level":                    "read_committed",
		"auto.offset.reset":                  "earliest",
		"enable.auto.commit":                 true,
		"enable.auto.offset.store":           false,
		"auto.commit.interval.ms":            1000,
		"session.timeout.ms":                 10000,
		"max.poll.interval.ms":               30000,
		"reconnect.backoff.max.ms":           1000,
		"topic.metadata.refresh.interval.ms": 3000,
		"socket.nagle.disable":               true,
		"go.logs.channel.enable":             true,
	}
	if err := kafkaclient.SetDebug(cm, cfg.KafkaDebug); err != nil {
		return nil, fmt.Errorf("KAFKA_DEBUG: %w", err)
	}
	c, err := kafka.NewConsumer(cm)
	if err != nil {
		return nil, fmt.Errorf("kafka consumer: %w", err)
	}
	kafkaclient.ForwardLogs(c.Logs(), log, cfg.KafkaDebug != "")
	return c, nil
}

// readiness checks Postgres and Kafka (required), that the live consumer
// is not stalled, and Redis (degraded without it: memory stands in).
func readiness(pool *pgxpool.Pool, rdb *redis.Client, consumer *kafka.Consumer, stalled func() error) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		if err := stalled(); err != nil {
			return nil, err
		}
		if err := pool.Ping(ctx); err != nil {
			return nil, errors.New("postgres unreachable")
		}
		if _, err := consumer.GetMetadata(nil, false, 2000); err != nil {
			return nil, errors.New("kafka unreachable")
		}
		if err := rdb.Ping(ctx).Err(); err != nil {
			return []string{"redis unreachable (serving from memory and Postgres)"}, nil
		}
		return nil, nil
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
