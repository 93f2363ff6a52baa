// Command temporal-dev runs a single-process Temporal server backed by a SQLite
// file, plus the Temporal Web UI: the equivalent of
// `temporal server start-dev --db-filename FILE`, without the temporal CLI.
//
//	temporal-dev -db-file /tmp/temporal.db -port 7233 -ui-port 8233
//
// Internal service ports (history, matching, worker) are picked free on
// 127.0.0.1 at every start, so several instances can run side by side as long
// as -port, -http-port, -ui-port, -metrics-port and -db-file differ.
//
// When the frontend serves every namespace (and the UI answers), one line is
// printed to stderr:
//
//	temporal-dev ready frontend=127.0.0.1:7233 http=127.0.0.1:NNNN ui=http://127.0.0.1:8233 metrics=off db=/abs/path.db namespaces=default
//
// SIGINT/SIGTERM stop the server gracefully and exit 0.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// listFlag accepts a flag repeatedly and/or comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func main() {
	os.Exit(run())
}

func run() int {
	var (
		o          options
		namespaces listFlag
		logLevel   string
		logFormat  string
	)
	flag.StringVar(&o.IP, "ip", "127.0.0.1", "IP to bind the frontend, HTTP API, UI and metrics to")
	flag.IntVar(&o.Port, "port", 7233, "frontend gRPC port")
	flag.IntVar(&o.HTTPPort, "http-port", 0, "frontend HTTP API port (0 = pick a free port)")
	flag.IntVar(&o.UIPort, "ui-port", 8233, "Web UI port (0 = no UI)")
	flag.IntVar(&o.MetricsPort, "metrics-port", 0, "Prometheus metrics port, served at /metrics (0 = no metrics)")
	flag.StringVar(&o.DBFile, "db-file", "temporal-dev.db", "SQLite database file; created if missing, reused on restart")
	flag.Var(&namespaces, "namespace", "namespace to register at start (repeatable or comma-separated; default \"default\")")
	flag.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	flag.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "temporal-dev: invalid -log-level %q\n", logLevel)
		return 2
	}
	handlerOpts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler
	switch logFormat {
	case "text":
		handler = slog.NewTextHandler(os.Stderr, handlerOpts)
	case "json":
		handler = slog.NewJSONHandler(os.Stderr, handlerOpts)
	default:
		fmt.Fprintf(os.Stderr, "temporal-dev: invalid -log-format %q\n", logFormat)
		return 2
	}
	o.Logger = slog.New(handler)
	o.LogLevel = level

	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "temporal-dev: unexpected arguments %q\n", flag.Args())
		return 2
	}
	if o.IP == "localhost" {
		o.IP = "127.0.0.1" // the server needs an IP, not a host name
	}
	if net.ParseIP(o.IP) == nil {
		fmt.Fprintf(os.Stderr, "temporal-dev: -ip %q is not an IP address\n", o.IP)
		return 2
	}
	if o.DBFile == "" {
		fmt.Fprintln(os.Stderr, "temporal-dev: -db-file is required")
		return 2
	}
	if len(namespaces) == 0 {
		namespaces = listFlag{"default"}
	}
	o.Namespaces = namespaces

	// Catch signals before starting, so an early SIGTERM still stops cleanly.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	started := time.Now()
	srv, err := startDevServer(o)
	if err != nil {
		o.Logger.Error("temporal-dev failed to start", "error", err)
		return 1
	}

	abs, _ := filepath.Abs(o.DBFile)
	ui := "off"
	if o.UIPort > 0 {
		ui = "http://" + net.JoinHostPort(dialableIP(o.IP), strconv.Itoa(o.UIPort))
	}
	metrics := "off"
	if o.MetricsPort > 0 {
		metrics = "http://" + net.JoinHostPort(dialableIP(o.IP), strconv.Itoa(o.MetricsPort)) + "/metrics"
	}
	fmt.Fprintf(os.Stderr, "temporal-dev ready frontend=%s http=%s ui=%s metrics=%s db=%s namespaces=%s\n",
		net.JoinHostPort(dialableIP(o.IP), strconv.Itoa(o.Port)),
		net.JoinHostPort(dialableIP(o.IP), strconv.Itoa(srv.httpPort)),
		ui, metrics, abs, strings.Join(o.Namespaces, ","))
	o.Logger.Info("temporal-dev started", "took", time.Since(started).Round(time.Millisecond))

	sig := <-sigs
	o.Logger.Info("temporal-dev stopping", "signal", sig.String())
	signal.Stop(sigs) // a second signal kills the process the default way
	if err := srv.Stop(); err != nil {
		o.Logger.Error("temporal-dev stop failed", "error", err)
		return 1
	}
	o.Logger.Info("temporal-dev stopped")
	return 0
}
