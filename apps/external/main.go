// Command external is the simulated third-party chat service: the REST API,
// WebSocket and browser UI of the original external service, a pollable
// change feed, and fault injection. Configuration is read from the
// environment (see Config).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/chatpoc/chat-poc/apps/external/api"
	"github.com/chatpoc/chat-poc/apps/external/store"
	"github.com/chatpoc/chat-poc/apps/external/web"
	"github.com/chatpoc/chat-poc/internal/service"
)

// Config is the service's configuration, read from these environment variables.
type Config struct {
	ListenAddr     string        `env:"EXTERNAL_LISTEN_ADDR" default:"127.0.0.1:30001" doc:"host:port to serve HTTP and WebSocket on"`
	DSN            string        `env:"PG_EXTERNAL_DSN" required:"true" secret:"true" doc:"Postgres DSN of the external database (its own, not the internal system's)"`
	AllowedOrigins []string      `env:"EXTERNAL_ALLOWED_ORIGINS" doc:"extra Origin host patterns allowed to open /ws, comma-separated (e.g. localhost:*); same-origin is always allowed"`
	AdminToken     string        `env:"EXTERNAL_ADMIN_TOKEN" secret:"true" doc:"bearer token that enables /admin/faults; empty disables fault injection at run time"`
	Faults         string        `env:"EXTERNAL_FAULTS" doc:"faults injected from the start, as the JSON body of PUT /admin/faults"`
	FeedRetention  time.Duration `env:"EXTERNAL_FEED_RETENTION" default:"168h" doc:"how long the change feed keeps changes; older cursors get 410"`
	LogLevel       string        `env:"LOG_LEVEL" default:"info" doc:"debug, info, warn or error"`
}

// shutdownTimeout bounds draining requests on SIGTERM; long-polls are cut short.
const shutdownTimeout = 10 * time.Second

// pruneInterval is how often feed entries past retention are deleted.
const pruneInterval = time.Hour

func main() { service.Main("external", run) }

func run(ctx context.Context, log *slog.Logger) error {
	var cfg Config
	log, err := service.Configure(&cfg, "external", nil, &cfg.LogLevel)
	if err != nil {
		return err
	}
	var faults api.Faults
	if cfg.Faults != "" {
		if err := json.Unmarshal([]byte(cfg.Faults), &faults); err != nil {
			return fmt.Errorf("configuration: EXTERNAL_FAULTS: %w", err)
		}
	}

	poolCfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx's message would quote the DSN, password included.
		return errors.New("configuration: PG_EXTERNAL_DSN is not a valid Postgres connection string")
	}
	// Short statements only: JIT compilation, triggered by cost estimates of
	// tables not yet analysed, made a feed page read 100x slower.
	poolCfg.ConnConfig.RuntimeParams["jit"] = "off"
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("connect to Postgres: %w", err)
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	st := store.New(pool, store.Options{Retention: cfg.FeedRetention})
	defer st.Close()

	srv := api.New(st, web.FS(), api.Config{
		AllowedOrigins: cfg.AllowedOrigins, AdminToken: cfg.AdminToken, Faults: faults, Ping: pool.Ping,
	}, log)
	httpSrv := &http.Server{
		Addr:              cfg.ListenAddr,
		Handler:           srv,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Long-polls last up to 30s; WebSocket connections are hijacked and
		// not subject to this.
		WriteTimeout: 45 * time.Second,
		IdleTimeout:  2 * time.Minute,
		BaseContext:  func(net.Listener) context.Context { return ctx },
	}

	g, gctx := errgroup.WithContext(ctx)
	service.Serve(gctx, g, httpSrv, shutdownTimeout, log)
	g.Go(func() error {
		tick := time.NewTicker(pruneInterval)
		defer tick.Stop()
		for {
			if n, err := st.Prune(gctx); err != nil && gctx.Err() == nil {
				log.Error("prune change feed", "err", err)
			} else if n > 0 {
				log.Info("pruned change feed", "deleted", n)
			}
			select {
			case <-gctx.Done():
				return nil
			case <-tick.C:
			}
		}
	})
	return g.Wait()
}
