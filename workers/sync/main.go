// Command sync is the sync worker: it hosts the singleton sync workflow and
// its activities (poll external's change feed, publish to Kafka) and makes
// sure the singleton runs. Run any number of replicas in any region; exactly
// one workflow execution polls at a time. Configuration is read from the
// environment (see Config).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/sdk/client"
	temporallog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"golang.org/x/sync/errgroup"

	"github.com/chatpoc/chat-poc/activities"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/feed"
	"github.com/chatpoc/chat-poc/internal/publisher"
	"github.com/chatpoc/chat-poc/internal/service"
	"github.com/chatpoc/chat-poc/internal/watchdog"
	"github.com/chatpoc/chat-poc/workflows"
)

// Config is the worker's configuration, read from these environment variables.
type Config struct {
	TemporalAddress   string        `env:"TEMPORAL_ADDRESS" required:"true" doc:"host:port of the Temporal frontend"`
	TemporalNamespace string        `env:"TEMPORAL_NAMESPACE" default:"default" doc:"Temporal namespace of the sync workflow"`
	ExternalURL       string        `env:"EXTERNAL_URL" required:"true" doc:"base URL of the external service, whose /api/changes feed is polled"`
	KafkaBootstrap    string        `env:"KAFKA_BOOTSTRAP" required:"true" doc:"bootstrap servers of this region's Kafka cluster, where changes are published"`
	KafkaCluster      string        `env:"KAFKA_CLUSTER" default:"a" doc:"name of this region's Kafka cluster (its MirrorMaker 2 alias), for logs, metrics and the status query"`
	FailoverBootstrap string        `env:"KAFKA_FAILOVER_BOOTSTRAP" doc:"bootstrap servers of the other region's cluster, used while this region's is unreachable; empty: no failover"`
	FailoverCluster   string        `env:"KAFKA_FAILOVER_CLUSTER" default:"b" doc:"name of the other region's Kafka cluster"`
	TransactionalID   string        `env:"SYNC_TRANSACTIONAL_ID" default:"chat-sync" doc:"Kafka transactional.id shared by all sync workers of one sync workflow: a new activity attempt fences older ones with it"`
	TopicPartitions   int           `env:"KAFKA_TOPIC_PARTITIONS" default:"0" doc:"partitions of the topics the worker creates if missing; 0: the broker's default"`
	TopicReplicas     int           `env:"KAFKA_TOPIC_REPLICATION_FACTOR" default:"0" doc:"replication factor of those topics; 0: the broker's default"`
	ListenAddr        string        `env:"SYNC_LISTEN_ADDR" default:"127.0.0.1:9464" doc:"host:port of /metrics, /healthz and /readyz"`
	Identity          string        `env:"SYNC_IDENTITY" doc:"this worker's identity in Temporal and in the status query; empty: hostname:pid"`
	LogLevel          string        `env:"LOG_LEVEL" default:"info" doc:"debug, info, warn or error"`
	KafkaDebug        string        `env:"KAFKA_DEBUG" doc:"librdkafka debug contexts of the producers (e.g. eos,broker or all), logged at info; empty: none"`
	StallAfter        time.Duration `env:"SYNC_STALL_AFTER" default:"15s" doc:"how long changes the feed returned may wait unpublished by the attempt running here before /readyz fails"`
	DeadAfter         time.Duration `env:"SYNC_DEAD_AFTER" default:"1m" doc:"how long before /healthz fails too, so that the supervisor restarts the worker (the sync resumes on another from its checkpoint)"`
}

// Timing of the worker.
const (
	// shutdownTimeout bounds a graceful stop: the running activity hands
	// over at once, the producer finishes its transaction.
	shutdownTimeout = 15 * time.Second
	// ensureInterval is how often the worker checks that the singleton runs
	// (it restarts it after an operator terminated it, say).
	ensureInterval = 30 * time.Second
	// kafkaOperationTimeout bounds each Kafka transaction step per cluster.
	kafkaOperationTimeout = 2 * time.Second
	// heartbeatThrottle is the most often the running activity's checkpoint
	// is sent to Temporal.
	heartbeatThrottle = 500 * time.Millisecond
	// dialRetryMax caps the backoff between attempts to reach Temporal.
	dialRetryMax = 10 * time.Second
)

func main() { service.Main("sync worker", run) }

func run(ctx context.Context, log *slog.Logger) error {
	var cfg Config
	log, err := service.Configure(&cfg, "sync", &cfg.Identity, &cfg.LogLevel)
	if err != nil {
		return err
	}

	fc, err := feed.New(cfg.ExternalURL, feed.Options{UserAgent: "chat-poc-sync/" + cfg.Identity})
	if err != nil {
		return fmt.Errorf("configuration: EXTERNAL_URL: %w", err)
	}
	clusters := []publisher.Cluster{{Name: cfg.KafkaCluster, Bootstrap: cfg.KafkaBootstrap}}
	if cfg.FailoverBootstrap != "" {
		clusters = append(clusters, publisher.Cluster{Name: cfg.FailoverCluster, Bootstrap: cfg.FailoverBootstrap})
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := activities.NewMetrics(reg)
	pub, err := publisher.New(publisher.Options{
		Clusters: clusters, TransactionalID: cfg.TransactionalID, ClientID: "sync-" + cfg.Identity, Logger: log,
		// A cluster that does not answer a transaction step within this is
		// failed over from: well below the activity's heartbeat timeout, so
		// the attempt fails over itself rather than being timed out.
		OperationTimeout: kafkaOperationTimeout,
		OnUnconfirmed:    metrics.Unconfirmed,
		Debug:            cfg.KafkaDebug,
	})
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	defer pub.Close() // after the worker stopped: aborts a transaction left open, closes producers

	acts := activities.New(fc, pub, cfg.Identity, metrics, log)
	wd, err := watchdog.New(metrics.Probe, watchdog.Options{
		Name: "sync-activity", Every: watchdog.DefaultEvery, ProbeTimeout: watchdog.DefaultProbeTimeout,
		StallAfter: cfg.StallAfter, DeadAfter: cfg.DeadAfter,
	}, watchdog.NewMetrics(reg, "sync"), log)
	if err != nil {
		return fmt.Errorf("configuration: SYNC_STALL_AFTER, SYNC_DEAD_AFTER: %w", err)
	}

	tc, err := dial(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer tc.Close()

	w := worker.New(tc, workflows.TaskQueue, worker.Options{
		Identity: cfg.Identity,
		// A stopping worker's activity hands over at once; this bounds the
		// wait for it.
		WorkerStopTimeout: shutdownTimeout,
		// The workflow task after a failover must not wait long for a dead
		// worker's sticky queue.
		StickyScheduleToStartTimeout: time.Second,
		// The SDK sends at most one heartbeat per throttle interval (by default
		// 0.8 x the heartbeat timeout). A retried attempt resumes from the last
		// heartbeat the server has, and republishes everything after it, so a
		// short interval keeps the duplicates of a failover few, for two small
		// RPCs a second.
		MaxHeartbeatThrottleInterval: heartbeatThrottle,
	})
	w.RegisterWorkflow(workflows.Sync)
	w.RegisterActivity(acts)
	if err := w.Start(); err != nil {
		return fmt.Errorf("start Temporal worker: %w", err)
	}
	defer w.Stop() // stops polling, signals the running activity to hand over, waits for it

	topics := topicSpecs(cfg)
	httpSrv := &http.Server{
		Addr:              cfg.ListenAddr,
		Handler:           routes(reg, tc, wd),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	g, gctx := errgroup.WithContext(ctx)
	service.Serve(gctx, g, httpSrv, 5*time.Second, log)
	g.Go(func() error {
		keepSingleton(gctx, tc, pub, topics, log)
		return nil
	})
	g.Go(func() error { wd.Run(gctx); return nil })
	return g.Wait()
}

// dial connects to Temporal, retrying with capped backoff until ctx ends: a
// worker may well start before the server is ready.
func dial(ctx context.Context, cfg Config, log *slog.Logger) (client.Client, error) {
	backoff := feed.Backoff{Initial: 200 * time.Millisecond, Max: dialRetryMax}
	for logged := false; ; {
		tc, err := client.DialContext(ctx, client.Options{
			HostPort:  cfg.TemporalAddress,
			Namespace: cfg.TemporalNamespace,
			Identity:  cfg.Identity,
			Logger:    temporallog.NewStructuredLogger(log.With("component", "temporal-sdk")),
		})
		if err == nil {
			return tc, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to Temporal at %s: %w", cfg.TemporalAddress, err)
		}
		if !logged {
			log.Warn("Temporal unreachable; retrying", "addr", cfg.TemporalAddress, "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to Temporal at %s: %w", cfg.TemporalAddress, ctx.Err())
		case <-time.After(backoff.Next()):
		}
	}
}

// topicSpecs are the topics the sync publishes to: the two change topics
// and its dead-letter topic.
func topicSpecs(cfg Config) []publisher.TopicSpec {
	names := []string{change.TopicMessages, change.TopicChats, activities.DeadLetterTopic}
	specs := make([]publisher.TopicSpec, 0, len(names))
	for _, name := range names {
		specs = append(specs, publisher.TopicSpec{Name: name, Partitions: cfg.TopicPartitions, ReplicationFactor: cfg.TopicReplicas})
	}
	return specs
}

// keepSingleton creates the topics and ensures the sync workflow runs, at
// start and every ensureInterval, until ctx ends. Failures are logged once
// per streak and retried.
func keepSingleton(ctx context.Context, tc client.Client, pub *publisher.Publisher, topics []publisher.TopicSpec, log *slog.Logger) {
	topicsOK, failing := false, false
	for {
		var err error
		if !topicsOK {
			octx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err = pub.EnsureTopics(octx, topics); err == nil {
				topicsOK = true
			} else {
				err = fmt.Errorf("create topics: %w", err)
			}
			cancel()
		}
		if serr := ensureSingleton(ctx, tc, log); serr != nil {
			err = errors.Join(err, serr)
		}
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			log.Warn("sync setup incomplete; retrying", "err", err, "every", ensureInterval)
			failing = true
		case err == nil && failing:
			log.Info("sync setup complete")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(ensureInterval):
		}
	}
}

// routes serves the worker's operational endpoints. /readyz: Temporal
// answers and the sync attempt running here (if any) is not stalled;
// /healthz: not stalled past the liveness bound; /debug/pprof/ to loopback
// clients.
func routes(reg *prometheus.Registry, tc client.Client, wd *watchdog.Watchdog) http.Handler {
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
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
			http.Error(w, "temporal unreachable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
