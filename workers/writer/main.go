// Command writer persists the synced chats and messages from Kafka into the
// internal Postgres database: a consumer group on the change topics and
// their MirrorMaker 2 copies from the other region, batches of records
// applied last-writer-wins by version with their partitions' offsets in the
// same transaction, malformed records to dead-letter topics. Run any number
// of replicas per region; configuration is read from the environment (see
// Config).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/kafkaclient"
	"github.com/chatpoc/chat-poc/internal/service"
	"github.com/chatpoc/chat-poc/internal/watchdog"
)

// Config is the writer's configuration, read from these environment variables.
type Config struct {
	PGDSN           string        `env:"PG_INTERNAL_DSN" required:"true" secret:"true" doc:"the internal database; list both servers (host1:port1,host2:port2) with target_session_attrs=read-write to follow a promotion of the standby"`
	PGMaxConns      int           `env:"WRITER_PG_MAX_CONNS" default:"4" doc:"most Postgres connections (one batch is in flight at a time; the rest serve reads of /readyz and offsets)"`
	KafkaBootstrap  string        `env:"KAFKA_BOOTSTRAP" required:"true" doc:"bootstrap servers of this region's Kafka cluster, whose topics and mirrored copies are consumed"`
	KafkaCluster    string        `env:"KAFKA_CLUSTER" default:"a" doc:"name of this region's Kafka cluster (its MirrorMaker 2 alias); offsets are stored per group and cluster"`
	Group           string        `env:"WRITER_GROUP" default:"chat-writer" doc:"Kafka consumer group of the writers of one region"`
	MessageTopic    string        `env:"KAFKA_MESSAGE_TOPIC" default:"chat-messages" doc:"topic of message records (its mirrored copies <cluster>.<topic> are read too)"`
	ChatTopic       string        `env:"KAFKA_CHAT_TOPIC" default:"chats" doc:"topic of chat records (and its mirrored copies)"`
	BatchMax        int           `env:"WRITER_BATCH_MAX" default:"1000" doc:"most records one Postgres transaction writes"`
	Linger          time.Duration `env:"WRITER_BATCH_LINGER" default:"5ms" doc:"longest a record waits for more records to join its batch"`
	TopicPartitions int           `env:"KAFKA_TOPIC_PARTITIONS" default:"0" doc:"partitions of the dead-letter topics the writer creates if missing; 0: the broker's default"`
	TopicReplicas   int           `env:"KAFKA_TOPIC_REPLICATION_FACTOR" default:"0" doc:"replication factor of those topics; 0: the broker's default"`
	ListenAddr      string        `env:"WRITER_LISTEN_ADDR" default:"127.0.0.1:9465" doc:"host:port of /metrics, /healthz and /readyz"`
	Identity        string        `env:"WRITER_IDENTITY" doc:"this writer's name in logs and its Kafka client.id; empty: hostname:pid"`
	KafkaDebug      string        `env:"KAFKA_DEBUG" doc:"librdkafka debug contexts (e.g. cgrp,fetch,broker or all), logged at info; empty: none"`
	StallAfter      time.Duration `env:"WRITER_STALL_AFTER" default:"15s" doc:"how long records of an owned partition may wait (committed in Kafka, not yet in Postgres, the writer not moving) before /readyz fails"`
	DeadAfter       time.Duration `env:"WRITER_DEAD_AFTER" default:"1m" doc:"how long before /healthz fails too, so that the supervisor restarts the writer (it resumes from the offsets in Postgres)"`
	LogLevel        string        `env:"LOG_LEVEL" default:"info" doc:"debug, info, warn or error"`
}

// Timing of the process.
const (
	// shutdownTimeout bounds the HTTP server's drain on a graceful stop;
	// meanwhile the open batch is applied (shutdownApplyTimeout) and the
	// group left (closeTimeout), then the dead-letter producer closes
	// (dlqCloseTimeout): all within the 20 s the local launcher grants (the
	// Kubernetes manifests, 30 s), whatever state Kafka and Postgres are in.
	shutdownTimeout = 5 * time.Second
	// dlqCloseTimeout bounds closing the dead-letter producer. Dead letters
	// not yet acknowledged by then belong to a batch that was not
	// committed: they are read, and dead-lettered, again.
	dlqCloseTimeout = 3 * time.Second
	// setupTimeout bounds the migrations and the dead-letter topics' creation
	// at start.
	setupTimeout = time.Minute
	// readyTimeout bounds /readyz's checks.
	readyTimeout = 2 * time.Second
)

// Consumer settings.
const (
	// sessionTimeoutMs is how long a writer killed with -9 keeps its
	// partitions before the group gives them to the others: the broker's
	// minimum, so a crash stalls its partitions for seconds, not the 45 s
	// default.
	sessionTimeoutMs   = 6000
	heartbeatMs        = 1500
	metadataRefreshMs  = 3000 // how soon a new (mirrored) topic is consumed
	kafkaCommitEveryMs = 1000 // the copy of the offsets for tools
)

func main() { service.Main("writer", run) }

func run(ctx context.Context, log *slog.Logger) error {
	var cfg Config
	log, err := service.Configure(&cfg, "writer", &cfg.Identity, &cfg.LogLevel)
	if err != nil {
		return err
	}
	if cfg.PGMaxConns < 1 {
		return errors.New("configuration: WRITER_PG_MAX_CONNS must be at least 1")
	}

	pool, err := openPool(cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	dlq, err := newDeadLetters(cfg.KafkaBootstrap, cfg.KafkaCluster, "writer-"+cfg.Identity, log)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	defer dlq.close(dlqCloseTimeout, log)
	if err := setup(ctx, cfg, pool, dlq, log); err != nil {
		return err
	}

	consumer, err := newConsumer(cfg, log)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	w, err := NewWriter(consumer, chatdb.New(pool), dlq, Options{
		Group: cfg.Group, Cluster: cfg.KafkaCluster,
		MessageTopic: cfg.MessageTopic, ChatTopic: cfg.ChatTopic,
		BatchMax: cfg.BatchMax, Linger: cfg.Linger,
	}, newMetrics(reg), log)
	if err != nil {
		kafkaclient.CloseConsumer(consumer, closeTimeout)
		return fmt.Errorf("configuration: %w", err)
	}

	progress, err := kafkaclient.NewProgress(consumer, kafkaclient.ProgressOptions{
		Bootstrap: cfg.KafkaBootstrap, ClientID: "writer-" + cfg.Identity + "-watchdog",
		Outage:  w.Outage(),
		Durable: w.Durable,
	})
	if err != nil {
		kafkaclient.CloseConsumer(consumer, closeTimeout)
		return fmt.Errorf("configuration: %w", err)
	}
	defer progress.Close()
	wd, err := watchdog.New(progress.Probe, watchdog.Options{
		Name: "writer-consumer", Every: watchdog.DefaultEvery, ProbeTimeout: watchdog.DefaultProbeTimeout,
		StallAfter: cfg.StallAfter, DeadAfter: cfg.DeadAfter,
	}, watchdog.NewMetrics(reg, "writer"), log)
	if err != nil {
		kafkaclient.CloseConsumer(consumer, closeTimeout)
		return fmt.Errorf("configuration: WRITER_STALL_AFTER, WRITER_DEAD_AFTER: %w", err)
	}

	httpSrv := &http.Server{
		Addr:              cfg.ListenAddr,
		Handler:           routes(reg, pool, consumer, wd),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	g, gctx := errgroup.WithContext(ctx)
	service.Serve(gctx, g, httpSrv, shutdownTimeout, log)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { wd.Run(gctx); return nil })
	err = g.Wait()
	log.Info("stopped")
	return err
}

// openPool connects to the internal database. A DSN listing the primary
// and the standby with target_session_attrs=read-write makes every new
// connection find the server that accepts writes, so the writer follows a
// promotion.
func openPool(cfg Config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.PGDSN)
	if err != nil {
		// pgx's message would quote the DSN, password included.
		return nil, errors.New("configuration: PG_INTERNAL_DSN is not a valid Postgres connection string")
	}
	pc.MaxConns = int32(cfg.PGMaxConns)
	pc.ConnConfig.RuntimeParams["application_name"] = "writer-" + cfg.Identity
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("Postgres pool: %w", err)
	}
	return pool, nil
}

// setup migrates the database and creates the dead-letter topics, retrying
// each until it succeeds: a writer may start before Postgres or Kafka.
func setup(ctx context.Context, cfg Config, pool *pgxpool.Pool, dlq *deadLetters, log *slog.Logger) error {
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"migrate the internal database", func(ctx context.Context) error { return chatdb.Migrate(ctx, pool) }},
		{"create the dead-letter topics", func(ctx context.Context) error {
			return dlq.ensureTopics(ctx, []string{change.DeadLetterTopic(cfg.MessageTopic), change.DeadLetterTopic(cfg.ChatTopic)},
				cfg.TopicPartitions, cfg.TopicReplicas)
		}},
	}
	for _, s := range steps {
		for logged := false; ; {
			sctx, cancel := context.WithTimeout(ctx, setupTimeout)
			err := s.do(sctx)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", s.what, err)
			}
			if !logged {
				log.Warn("setup step failed; retrying", "step", s.what, "err", err)
				logged = true
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: %w", s.what, ctx.Err())
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// newConsumer creates the group's consumer: cooperative rebalancing,
// read_committed (the sync publishes in transactions), offsets stored only
// after the writer's transaction committed, and no automatic offset reset
// (a position outside its log is reported and checked: logcheck.go).
func newConsumer(cfg Config, log *slog.Logger) (*kafka.Consumer, error) {
	cm := &kafka.ConfigMap{
		"bootstrap.servers":                  cfg.KafkaBootstrap,
		"group.id":                           cfg.Group,
		"client.id":                          "writer-" + cfg.Identity,
		"partition.assignment.strategy":      "cooperative-sticky",
		"isolation.level":                    "read_committed",
		"auto.offset.reset":                  "error",
		"enable.auto.commit":                 true,
		"enable.auto.offset.store":           false,
		"auto.commit.interval.ms":            kafkaCommitEveryMs,
		"session.timeout.ms":                 sessionTimeoutMs,
		"heartbeat.interval.ms":              heartbeatMs,
		"topic.metadata.refresh.interval.ms": metadataRefreshMs,
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

// routes serves the writer's operational endpoints. /readyz: Postgres
// accepts writes, the Kafka cluster answers and the consumer is not
// stalled; /healthz: not stalled past the liveness bound; /debug/pprof/ to
// loopback clients.
func routes(reg *prometheus.Registry, pool *pgxpool.Pool, consumer *kafka.Consumer, wd *watchdog.Watchdog) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/debug/pprof/", service.Pprof())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := wd.Dead(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := wd.Stalled(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := pool.Ping(ctx); err != nil {
			http.Error(w, "postgres unreachable", http.StatusServiceUnavailable)
			return
		}
		if _, err := consumer.GetMetadata(nil, false, int(readyTimeout/time.Millisecond)); err != nil {
			http.Error(w, "kafka unreachable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
