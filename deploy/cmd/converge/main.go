// Command converge checks that the internal system converged to what the
// external service acknowledged: it compares the load generator's log with
// the internal database and, optionally, with WebSocket streams recorded by
// internal UI clients (see converge.Received for their format), prints a
// summary, and exits non-zero if anything was lost, stale, duplicated or
// regressed, or if a stream lacks a final state it owes (a recorded stream
// owes the chats it loaded; see converge's package doc).
//
//	go run ./deploy/cmd/converge -log load.jsonl [-dsn DSN] [-stream tab.jsonl]... [-wait 30s] [-json report.json]
//
// Exit status: 0 converged, 1 findings, 2 the check could not be made.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/internal/converge"
)

// Exit statuses.
const (
	exitConverged = 0
	exitFindings  = 1
	exitError     = 2
)

// pollInterval is how often -wait reads the database again: short against
// the seconds a failover takes, long against one read of a test's rows.
const pollInterval = 500 * time.Millisecond

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	code, err := run(ctx, log, os.Args[1:], os.Stdout)
	if err != nil {
		log.Error("convergence check failed to run", "err", err)
	}
	os.Exit(code)
}

// config is the command's flags.
type config struct {
	logPath  string
	dsn      string
	streams  []string
	jsonPath string
	wait     time.Duration
	show     int
}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("converge", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.logPath, "log", "", "the load generator's log of acknowledged writes (required)")
	fs.StringVar(&c.dsn, "dsn", os.Getenv("PG_INTERNAL_DSN"), "the internal database (default $PG_INTERNAL_DSN)")
	fs.Func("stream", "a recorded WebSocket stream (JSON lines of converge.Received); repeatable", func(p string) error {
		c.streams = append(c.streams, p)
		return nil
	})
	fs.StringVar(&c.jsonPath, "json", "", "also write the report as JSON to this file (- for stdout, instead of the summary)")
	fs.DurationVar(&c.wait, "wait", 0, "read the database again until nothing is lost or stale, for at most this long (0: read once)")
	fs.IntVar(&c.show, "show", 20, "findings listed in the summary per kind")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	switch {
	case fs.NArg() > 0:
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.logPath == "":
		return config{}, errors.New("-log is required")
	case c.dsn == "":
		return config{}, errors.New("-dsn (or PG_INTERNAL_DSN) is required")
	case c.wait < 0 || c.show < 0:
		return config{}, errors.New("-wait and -show must not be negative")
	}
	return c, nil
}

// run checks and returns the exit status.
func run(ctx context.Context, log *slog.Logger, args []string, stdout io.Writer) (int, error) {
	cfg, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return exitConverged, nil
	}
	if err != nil {
		return exitError, err
	}
	acked, err := loadgen.ReadLog(cfg.logPath)
	if err != nil {
		return exitError, err
	}
	streams, err := converge.ReadStreams(cfg.streams)
	if err != nil {
		return exitError, err
	}
	pc, err := pgxpool.ParseConfig(cfg.dsn)
	if err != nil {
		return exitError, errors.New("-dsn is not a valid Postgres connection string") // pgx's error would quote the password
	}
	pc.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return exitError, fmt.Errorf("open the internal database: %w", err)
	}
	defer pool.Close()
	log.Info("checking", "acknowledged", len(acked), "streams", len(streams), "wait", cfg.wait)

	var report converge.Report
	if cfg.wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, cfg.wait)
		var waited time.Duration
		report, waited, err = converge.Await(wctx, pool, acked, streams, pollInterval)
		cancel()
		if err != nil {
			return exitError, err
		}
		log.Info("compared", "converged", report.Converged(), "waited", waited.Round(time.Millisecond))
	} else {
		db, err := converge.LoadDB(ctx, pool, converge.ChatIDs(acked))
		if err != nil {
			return exitError, err
		}
		report = converge.Compare(acked, db, streams)
	}

	if cfg.jsonPath != "-" {
		if err := converge.WriteSummary(stdout, report, cfg.show); err != nil {
			return exitError, fmt.Errorf("write the summary: %w", err)
		}
	}
	if cfg.jsonPath != "" {
		if err := writeJSON(cfg.jsonPath, stdout, report); err != nil {
			return exitError, err
		}
	}
	if report.Failed() {
		return exitFindings, nil
	}
	return exitConverged, nil
}

// writeJSON writes r, indented, to path ("-": stdout).
func writeJSON(path string, stdout io.Writer, r converge.Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the report: %w", err)
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = stdout.Write(b)
	} else {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		return fmt.Errorf("write the report to %s: %w", path, err)
	}
	return nil
}
