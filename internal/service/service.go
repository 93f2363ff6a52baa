// Package service holds what every one of our processes does the same way:
// load its configuration and log it, run until SIGINT or SIGTERM with a
// JSON logger, and serve HTTP with a graceful shutdown.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/chatpoc/chat-poc/internal/envconfig"
	"github.com/chatpoc/chat-poc/internal/logging"
)

// Main runs run with a context that ends on SIGINT or SIGTERM and a JSON
// logger on stderr; if run fails it logs the error as "<name> stopped" and
// exits with status 1.
func Main(name string, run func(ctx context.Context, log *slog.Logger) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	err := run(ctx, log)
	stop()
	if err != nil {
		log.Error(name+" stopped", "err", err)
		os.Exit(1)
	}
}

// Serve runs srv in g until ctx ends, then shuts it down, letting requests
// in flight finish for up to timeout.
func Serve(ctx context.Context, g *errgroup.Group, srv *http.Server, timeout time.Duration, log *slog.Logger) {
	g.Go(func() error {
		log.Info("serving", "addr", srv.Addr)
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve %s: %w", srv.Addr, err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		return srv.Shutdown(sctx)
	})
}

// Configure loads cfg (a pointer to a config struct with envconfig tags)
// from the environment, sets *identity (a field of cfg, or nil) to
// hostname:pid if it is empty, and returns the logger of the service named
// name at the level *level (a field of cfg), having logged the
// configuration once with secrets masked.
func Configure(cfg any, name string, identity, level *string) (*slog.Logger, error) {
	if err := envconfig.Load(cfg); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	attrs := []any{"service", name}
	if identity != nil {
		if *identity == "" {
			host, _ := os.Hostname()
			*identity = host + ":" + strconv.Itoa(os.Getpid())
		}
		attrs = append(attrs, "identity", *identity)
	}
	log, err := logging.New(*level, attrs...)
	if err != nil {
		return nil, fmt.Errorf("configuration: LOG_LEVEL: %w", err)
	}
	log.Info("starting", "config", envconfig.LogValue(cfg))
	return log, nil
}
