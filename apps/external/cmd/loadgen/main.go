// Command loadgen drives the external service's REST API with a realistic mix
// of writes and records every acknowledged write, with the server's timestamp
// and version, as JSON lines: the ground truth for end-to-end checks.
//
//	go run ./apps/external/cmd/loadgen -url http://127.0.0.1:30001 -rate 100 -duration 1m -log load.jsonl
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(out)
	defURL := os.Getenv("EXTERNAL_URL")
	if defURL == "" {
		defURL = "http://127.0.0.1:30001"
	}
	var cfg loadgen.Config
	fs.StringVar(&cfg.BaseURL, "url", defURL, "external service base URL (default $EXTERNAL_URL)")
	fs.Float64Var(&cfg.Rate, "rate", 50, "writes per second")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long to run (0 with -ops: until -ops)")
	fs.IntVar(&cfg.MaxOps, "ops", 0, "stop after this many writes (0 = no limit)")
	fs.IntVar(&cfg.Chats, "chats", 20, "chats kept alive at once")
	fs.IntVar(&cfg.Concurrency, "concurrency", 8, "requests in flight at most")
	fs.DurationVar(&cfg.BurstEvery, "burst-every", 0, "every this long, a burst of -burst-size writes (0 = none)")
	fs.IntVar(&cfg.BurstSize, "burst-size", 50, "writes per burst")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "random seed of the mix (0 = random)")
	logPath := fs.String("log", "loadgen.jsonl", "file to write acknowledged writes to (JSON lines)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rec, err := loadgen.CreateFileRecorder(*logPath)
	if err != nil {
		return err
	}
	st, runErr := loadgen.Run(ctx, cfg, rec, func(s loadgen.Stats) {
		fmt.Fprintf(out, "%6.1fs  sent %d  acked %d  failed %d  throttled %d  404 %d\n",
			s.Elapsed.Seconds(), s.Attempted, s.Acked, s.Failed, s.Throttled, s.NotFound)
	})
	if err := rec.Close(); err != nil && runErr == nil {
		runErr = err
	}
	fmt.Fprintf(out, "done in %s: %d acknowledged writes (%.0f/s) in %s; %d failed, %d throttled, %d 404s; ack latency %s\n",
		st.Elapsed.Round(time.Millisecond), st.Acked, float64(st.Acked)/st.Elapsed.Seconds(), *logPath,
		st.Failed, st.Throttled, st.NotFound, percentiles(st.AckLatency))
	return runErr
}

func percentiles(d []time.Duration) string {
	if len(d) == 0 {
		return "n/a"
	}
	slices.Sort(d)
	p := func(q float64) time.Duration { return d[int(q*float64(len(d)-1))].Round(10 * time.Microsecond) }
	return fmt.Sprintf("p50 %s p99 %s max %s", p(.5), p(.99), d[len(d)-1].Round(10*time.Microsecond))
}
