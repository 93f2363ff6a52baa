// Package service holds what every one of our processes does the same way:
// load its configuration and log it, run until SIGINT or SIGTERM with a
// JSON logger, serve HTTP with a graceful shutdown, and serve profiles to
// loopback clients. SIGQUIT is left to the Go runtime: it writes every
// goroutine's stack to stderr (the process's log) and exits, so a wedged
// process can always be made to say where it is stuck.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
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

// Pprof serves net/http/pprof's profiles (mount it at /debug/pprof/) to
// loopback clients only: the local launcher, a shell on the host, `kubectl
// port-forward` (which arrives from inside the pod). Anything else gets 403,
// so the profiles can share a port with public routes. A goroutine dump of a
// wedged process: GET /debug/pprof/goroutine?debug=2.
func Pprof() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "profiles are served to loopback clients only", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}
