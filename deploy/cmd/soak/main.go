// Command soak runs the load generator against a running geo stack for a
// long time at a steady rate and proves the system bounded over time: it
// samples the resident memory of every service of ours and Redis's
// used_memory at a fixed interval, records what two internal UI clients (one
// per region) are pushed, and at the end checks that the database converged
// to every acknowledged write and that the streams are complete and never
// went back (internal/converge), and that memory stayed flat: every judged
// series' samples of the second half within ±10 % of its sample at the
// half-way mark. The judged series are each service's and Redis's, except
// the sync workers', which are judged as a role (see syncWorkers).
//
//	bin/devstack exec -profile geo -dir .devstack-soak -ports auto -fresh -- \
//	  go run ./deploy/cmd/soak [-duration 1h] [-rate 200] [-every 1m] [-out .]
//	go run ./deploy/cmd/soak -judge soak.csv   # judges a recorded soak's memory again
//
// It writes <out>/soak.csv (the samples) and <out>/soak.svg (their chart),
// prints progress on stderr and, on stdout, one line in `go test -bench`
// format (BenchmarkSoak) that deploy/cmd/benchmd writes into BENCHMARKS.md.
// Exit status: 0 passed, 1 findings (lost, stale, incomplete or regressed
// streams, memory not flat), 2 the soak could not run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/e2e/chaostest"
	"github.com/chatpoc/chat-poc/internal/converge"
)

// Exit statuses.
const (
	exitPassed   = 0
	exitFindings = 1
	exitError    = 2
)

const (
	// flatTolerance is how far a series' samples of the second half may be
	// from its sample at the half-way mark.
	flatTolerance = 0.10
	// convergeWithin bounds the wait for the pipeline to drain after the
	// load stops.
	convergeWithin = 10 * time.Minute
	// pollInterval is how often the convergence check reads the database.
	pollInterval = 500 * time.Millisecond
)

// ours are the stack's components whose memory the soak judges.
var ours = []devstack.Name{
	devstack.External, devstack.SyncA1, devstack.SyncA2, devstack.SyncB1,
	devstack.WriterA1, devstack.WriterA2, devstack.WriterB1,
	devstack.InternalA1, devstack.InternalB1,
}

// redisSeries names Redis's used_memory among the series.
const redisSeries = "redis-used_memory"

// syncWorkers are the replicas of the sync worker. Exactly one runs the sync
// activity at a time, and which one changes: every continue-as-new (about
// every 25 minutes) schedules the next run's activity on whichever worker
// polls first, and a failover moves it too. The activity's memory (its
// producers, its pages) moves with it — the 1-hour soak of 2026-12-06 saw
// sync-b1 go from 42 to 59 MB and sync-a1 from 62 to 51 when the activity
// moved at minute 56 — so the soak judges the role, not each replica: the
// largest of their samples (the worker running the activity) and the
// smallest (an idle one). The chart and soak.csv keep each replica's.
var syncWorkers = []devstack.Name{devstack.SyncA1, devstack.SyncA2, devstack.SyncB1}

// The judged series of the sync workers' role.
const (
	syncActiveSeries = "sync-active"
	syncIdleSeries   = "sync-idle"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	code, err := run(ctx, log, os.Args[1:], os.Stdout)
	if err != nil {
		log.Error("soak failed to run", "err", err)
	}
	os.Exit(code)
}

// config is the command's flags.
type config struct {
	duration time.Duration
	rate     float64
	every    time.Duration
	chats    int
	out      string
	judge    string
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.DurationVar(&c.duration, "duration", time.Hour, "how long the load runs")
	fs.Float64Var(&c.rate, "rate", 200, "writes per second")
	fs.DurationVar(&c.every, "every", time.Minute, "sampling interval")
	fs.IntVar(&c.chats, "chats", 50, "chats the load generator keeps alive at once")
	fs.StringVar(&c.out, "out", ".", "directory for soak.csv and soak.svg")
	fs.StringVar(&c.judge, "judge", "", "judge the memory of the soak recorded in this soak.csv, and run nothing")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case c.duration <= 0 || c.every <= 0 || c.rate <= 0 || c.chats <= 0:
		return c, errors.New("-duration, -every, -rate and -chats must be positive")
	case c.duration < 4*c.every:
		return c, fmt.Errorf("-duration %s is less than 4 samples of -every %s: nothing to judge", c.duration, c.every)
	}
	return c, nil
}

func run(ctx context.Context, log *slog.Logger, args []string, stdout io.Writer) (int, error) {
	cfg, err := parseFlags(args)
	if err != nil {
		return exitError, err
	}
	if cfg.judge != "" {
		return judgeFile(cfg.judge, log)
	}
	dir := os.Getenv(devstack.EnvDir)
	if dir == "" {
		return exitError, fmt.Errorf("%s is not set: run the soak inside `bin/devstack exec` (make soak)", devstack.EnvDir)
	}
	stack, err := devstack.Connect(dir)
	if err != nil {
		return exitError, err
	}
	env := func(key string) string {
		v, gerr := stack.Env().Get(key)
		err = errors.Join(err, gerr)
		return v
	}
	externalURL, internalA, internalB := env(devstack.EnvExternalURL), env(devstack.EnvInternalURL), env(devstack.EnvInternalBURL)
	redisAddr, dsn := env(devstack.EnvRedisAddr), env(devstack.EnvPGInternalDSN)
	if err != nil {
		return exitError, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return exitError, fmt.Errorf("connect to the internal database: %w", err)
	}
	defer pool.Close()

	var recorders []*chaostest.Recorder
	for _, target := range []struct{ name, url string }{{"internal-a1", internalA}, {"internal-b1", internalB}} {
		r, err := chaostest.NewRecorder(target.name, target.url)
		if err != nil {
			return exitError, err
		}
		defer r.Stop()
		recorders = append(recorders, r)
	}
	csvPath := filepath.Join(cfg.out, "soak.csv")
	s := &sampler{stack: stack, rdb: rdb, start: time.Now()}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	acked := &loadgen.MemoryRecorder{}
	loadDone := make(chan error, 1)
	var stats loadgen.Stats
	go func() {
		var lerr error
		stats, lerr = loadgen.Run(loadCtx, loadgen.Config{
			BaseURL: externalURL, Rate: cfg.rate, Duration: cfg.duration, Chats: cfg.chats, Concurrency: 16,
		}, acked, nil)
		loadDone <- lerr
	}()
	log.Info("soak started", "duration", cfg.duration, "rate", cfg.rate, "every", cfg.every, "samples", csvPath)
	if err := s.sample(ctx); err != nil {
		return exitError, err
	}
	tick := time.NewTicker(cfg.every)
	defer tick.Stop()
	var loadErr error
wait:
	for {
		select {
		case <-ctx.Done():
			return exitError, ctx.Err()
		case loadErr = <-loadDone:
			break wait
		case <-tick.C:
			if err := s.sample(ctx); err != nil {
				return exitError, err
			}
			last := s.rows[len(s.rows)-1]
			log.Info("sample", "minute", fmt.Sprintf("%.1f", last.at.Minutes()), "acked", acked.Len(),
				"max-rss-MB", fmt.Sprintf("%.1f", maxOf(last.mb, ours)), "redis-MB", fmt.Sprintf("%.1f", last.mb[redisSeries]))
		}
	}
	if err := s.sample(ctx); err != nil {
		return exitError, err
	}
	if loadErr != nil {
		return exitError, fmt.Errorf("load generator: %w", loadErr)
	}
	if err := s.writeCSV(csvPath); err != nil {
		return exitError, err
	}
	svgPath := filepath.Join(cfg.out, "soak.svg")
	if err := writeChart(svgPath, s.rows, s.series(), cfg); err != nil {
		return exitError, err
	}

	log.Info("load done; waiting for the pipeline to converge", "acked", stats.Acked, "failed", stats.Failed)
	cctx, cancel := context.WithTimeout(ctx, convergeWithin)
	defer cancel()
	_, drained, err := converge.Await(cctx, pool, acked.Records(), nil, pollInterval)
	if err != nil {
		return exitError, fmt.Errorf("convergence check: %w", err)
	}
	// The streams are judged once the database converged, given as long
	// as a chaos scenario's to receive their last frames.
	db, err := converge.LoadDB(cctx, pool, converge.ChatIDs(acked.Records()))
	if err != nil {
		return exitError, fmt.Errorf("read the internal database: %w", err)
	}
	report, _ := chaostest.WaitStreams(acked.Records(), db, recorders, chaostest.DeliveryBound)
	if err := converge.WriteSummary(os.Stderr, report, 20); err != nil {
		return exitError, err
	}

	growth := s.growth()
	flat := judge(growth, log)
	writeBenchLine(stdout, stats, report, drained, growth, s.rows[len(s.rows)-1], cfg)
	log.Info("soak finished", "chart", svgPath, "samples", csvPath, "flat", flat, "failed", report.Failed())
	if report.Failed() || !flat {
		return exitFindings, nil
	}
	return exitPassed, nil
}

// row is one sample: each series' value in MB at a time since the start.
type row struct {
	at time.Duration
	mb map[string]float64
}

// sampler takes the samples.
type sampler struct {
	stack *devstack.Client
	rdb   *redis.Client
	start time.Time
	rows  []row
}

// sample reads the resident memory of our running services and Redis's
// used_memory. A service that is not running (restarted by its supervisor)
// has no value in that row.
func (s *sampler) sample(ctx context.Context) error {
	sts, err := s.stack.Status(ctx)
	if err != nil {
		return fmt.Errorf("stack status: %w", err)
	}
	r := row{at: time.Since(s.start), mb: map[string]float64{}}
	for _, st := range sts {
		if !slices.Contains(ours, st.Name) || !st.Running {
			continue
		}
		if kb, err := devstack.VmRSS(st.Pid); err == nil {
			r.mb[string(st.Name)] = float64(kb) / 1024
		}
	}
	info, err := s.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return fmt.Errorf("redis INFO memory: %w", err)
	}
	used, err := infoField(info, "used_memory")
	if err != nil {
		return err
	}
	r.mb[redisSeries] = float64(used) / (1 << 20)
	s.rows = append(s.rows, r)
	return nil
}

// series returns the names of the sampled series, ours first.
func (s *sampler) series() []string {
	var out []string
	for _, n := range ours {
		out = append(out, string(n))
	}
	return append(out, redisSeries)
}

// growth returns, per judged series (judged), the largest change (in %) of
// a sample of the second half from the sample at the half-way mark.
func (s *sampler) growth() map[string]float64 {
	out := map[string]float64{}
	if len(s.rows) < 3 {
		return out
	}
	mid := len(s.rows) / 2
	series := make([]map[string]float64, len(s.rows))
	for i, r := range s.rows {
		series[i] = judged(r)
	}
	for name, ref := range series[mid] {
		if ref == 0 {
			continue
		}
		worst := 0.0
		for _, js := range series[mid:] {
			if v, ok := js[name]; ok {
				worst = max(worst, 100*abs(v-ref)/ref)
			}
		}
		out[name] = worst
	}
	return out
}

// judged returns the series the soak judges in row r: each one sampled,
// except the sync workers', which give syncActiveSeries (the largest) and
// syncIdleSeries (the smallest).
func judged(r row) map[string]float64 {
	out := map[string]float64{}
	var syncs []float64
	for name, v := range r.mb {
		if slices.Contains(syncWorkers, devstack.Name(name)) {
			syncs = append(syncs, v)
			continue
		}
		out[name] = v
	}
	if len(syncs) > 0 {
		out[syncActiveSeries], out[syncIdleSeries] = slices.Max(syncs), slices.Min(syncs)
	}
	return out
}

// judge logs each judged series' worst change and reports whether all are
// within flatTolerance.
func judge(growth map[string]float64, log *slog.Logger) bool {
	flat := true
	for _, name := range slices.Sorted(maps.Keys(growth)) {
		g := growth[name]
		if g > flatTolerance*100 {
			flat = false
			log.Error("memory not flat", "series", name, "worst-change-%", fmt.Sprintf("%.1f", g))
			continue
		}
		log.Info("memory flat", "series", name, "worst-change-%", fmt.Sprintf("%.1f", g))
	}
	return flat
}

// judgeFile judges the memory of the soak recorded in path (a soak.csv).
func judgeFile(path string, log *slog.Logger) (int, error) {
	rows, err := readCSV(path)
	if err != nil {
		return exitError, err
	}
	if len(rows) < 3 {
		return exitError, fmt.Errorf("%s: %d samples, too few to judge", path, len(rows))
	}
	s := &sampler{rows: rows}
	if !judge(s.growth(), log) {
		return exitFindings, nil
	}
	return exitPassed, nil
}

// readCSV reads the samples writeCSV wrote.
func readCSV(path string) ([]row, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read samples: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	header := strings.Split(lines[0], ",")
	if len(header) < 2 || header[0] != "minute" {
		return nil, fmt.Errorf("%s: not a soak.csv (header %q)", path, lines[0])
	}
	var rows []row
	for i, line := range lines[1:] {
		fields := strings.Split(line, ",")
		if len(fields) != len(header) {
			return nil, fmt.Errorf("%s:%d: %d fields, want %d", path, i+2, len(fields), len(header))
		}
		min, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: minute: %w", path, i+2, err)
		}
		r := row{at: time.Duration(min * float64(time.Minute)), mb: map[string]float64{}}
		for j, f := range fields[1:] {
			if f == "" {
				continue // not running at that sample
			}
			v, err := strconv.ParseFloat(f, 64)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %s: %w", path, i+2, header[j+1], err)
			}
			r.mb[header[j+1]] = v
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func (s *sampler) writeCSV(path string) error {
	var b strings.Builder
	names := s.series()
	b.WriteString("minute," + strings.Join(names, ",") + "\n")
	for _, r := range s.rows {
		b.WriteString(strconv.FormatFloat(r.at.Minutes(), 'f', 2, 64))
		for _, n := range names {
			b.WriteByte(',')
			if v, ok := r.mb[n]; ok {
				b.WriteString(strconv.FormatFloat(v, 'f', 2, 64))
			}
		}
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write samples: %w", err)
	}
	return nil
}

// writeBenchLine prints the soak's figures as one `go test -bench` line.
func writeBenchLine(w io.Writer, stats loadgen.Stats, r converge.Report, drained time.Duration,
	growth map[string]float64, last row, cfg config) {
	worst := 0.0
	for _, g := range growth {
		worst = max(worst, g)
	}
	streamFindings := len(r.Regressions) + len(r.StreamDuplicates) + len(r.LostInStream)
	fmt.Fprintf(w, "BenchmarkSoak/%s-%.0fwps \t1\t0 ns/op\t%.0f writes/s\t%d lost\t%d stale\t%d stream-findings\t%.1f drain-s\t%.1f max-growth-%%\t%.1f max-rss-MB\t%.1f redis-MB\n",
		cfg.duration, cfg.rate, float64(stats.Acked)/stats.Elapsed.Seconds(), len(r.Lost), len(r.Stale),
		streamFindings, drained.Seconds(), worst, maxOf(last.mb, ours), last.mb[redisSeries])
}

func maxOf(mb map[string]float64, names []devstack.Name) float64 {
	m := 0.0
	for _, n := range names {
		m = max(m, mb[string(n)])
	}
	return m
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// infoField returns an integer field of a Redis INFO answer.
func infoField(info, field string) (int64, error) {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("redis INFO has no %s", field)
}
