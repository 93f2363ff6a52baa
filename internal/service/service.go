// Package service holds what every one of our processes does the same way:
// run until SIGINT or SIGTERM with a JSON logger, and serve HTTP with a
// graceful shutdown.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
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
