// Package watchdog turns "how long has this process had work it did not
// do" into the signals a supervisor acts on: readiness goes red once a stall
// has lasted StallAfter, liveness once it has lasted DeadAfter (so that
// Kubernetes or the local launcher restarts the process), a gauge says so,
// and each transition is logged once.
//
// What counts as work and progress is the caller's: a Probe measures it (a
// Kafka consumer's position against the partitions' committed end, the sync
// activity's steps against the time it has been running). The watchdog runs
// the probe on its own goroutine, so a wedged consumer loop cannot also
// wedge the check on it.
package watchdog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Probe reports how long work has been waiting without progress (0: none
// waiting, or progress within the last interval) and, when it is not 0,
// what is waiting (e.g. "chats[2]: position 120, committed end 180"). An
// error means the probe could not tell (its own Kafka connection is down,
// say): the watchdog keeps its last verdict rather than call that progress.
type Probe func(ctx context.Context) (stalled time.Duration, what string, err error)

// Options configure a Watchdog.
type Options struct {
	// Name says what is watched, in logs and in the metrics' "watch" label
	// (e.g. "live-consumer", "writer-consumer", "sync-activity").
	Name string
	// Every is how often the probe runs; ProbeTimeout bounds one run.
	Every, ProbeTimeout time.Duration
	// StallAfter is how long work may wait before readiness goes red.
	StallAfter time.Duration
	// DeadAfter (> StallAfter) is how long before liveness fails.
	DeadAfter time.Duration
}

// Defaults for the processes' consumers: a record that a healthy consumer
// handles in milliseconds has waited 15 s: take the instance out of
// service; a minute: restart it.
const (
	DefaultEvery        = 2 * time.Second
	DefaultProbeTimeout = 5 * time.Second
	DefaultStallAfter   = 15 * time.Second
	DefaultDeadAfter    = time.Minute
)

// Watchdog runs a Probe and keeps its verdict.
type Watchdog struct {
	opts    Options
	probe   Probe
	metrics *Metrics
	log     *slog.Logger

	mu      sync.Mutex
	stalled time.Duration // from the last probe that answered
	what    string
	state   state
	since   time.Time // when the current stall began (as first reported)
}

type state int

const (
	stateOK state = iota
	stateStalled
	stateDead
)

// New returns a watchdog of probe; m may be shared by several watchdogs of
// one process (they differ by name).
func New(probe Probe, opts Options, m *Metrics, log *slog.Logger) (*Watchdog, error) {
	switch {
	case opts.Name == "":
		return nil, fmt.Errorf("watchdog: a name is required")
	case opts.Every <= 0 || opts.ProbeTimeout <= 0:
		return nil, fmt.Errorf("watchdog %s: interval %s and probe timeout %s must be positive", opts.Name, opts.Every, opts.ProbeTimeout)
	case opts.StallAfter <= 0 || opts.DeadAfter <= opts.StallAfter:
		return nil, fmt.Errorf("watchdog %s: want 0 < stall bound (%s) < dead bound (%s)", opts.Name, opts.StallAfter, opts.DeadAfter)
	}
	m.stalled.WithLabelValues(opts.Name).Set(0)
	return &Watchdog{opts: opts, probe: probe, metrics: m, log: log.With("watch", opts.Name)}, nil
}

// Run probes every opts.Every until ctx ends.
func (w *Watchdog) Run(ctx context.Context) {
	tick := time.NewTicker(w.opts.Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.Check(ctx)
	}
}

// Check runs the probe once and updates the verdict (Run calls it; tests
// may call it directly).
func (w *Watchdog) Check(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, w.opts.ProbeTimeout)
	stalled, what, err := w.probe(pctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			w.metrics.probeErrors.WithLabelValues(w.opts.Name).Inc()
			w.log.Debug("watchdog probe failed; keeping the last verdict", "err", err)
		}
		return
	}
	w.observe(stalled, what)
}

func (w *Watchdog) observe(stalled time.Duration, what string) {
	next := stateOK
	switch {
	case stalled >= w.opts.DeadAfter:
		next = stateDead
	case stalled >= w.opts.StallAfter:
		next = stateStalled
	}
	w.mu.Lock()
	prev, since := w.state, w.since
	w.stalled, w.what, w.state = stalled, what, next
	if prev == stateOK && next != stateOK {
		since = time.Now().Add(-stalled)
		w.since = since
	}
	w.mu.Unlock()

	w.metrics.stalled.WithLabelValues(w.opts.Name).Set(stalled.Seconds())
	switch {
	case next == prev:
	case next == stateOK:
		w.log.Info("progressing again", "stalled_for", time.Since(since).Round(time.Second))
	case next == stateStalled && prev == stateOK:
		w.metrics.stalls.WithLabelValues(w.opts.Name).Inc()
		w.log.Warn("stalled: work waiting without progress; not ready", "for", stalled.Round(time.Second), "waiting", what)
	case next == stateDead:
		if prev == stateOK {
			w.metrics.stalls.WithLabelValues(w.opts.Name).Inc()
		}
		w.log.Error("stalled past the liveness bound: /healthz fails so that the supervisor restarts the process",
			"for", stalled.Round(time.Second), "bound", w.opts.DeadAfter, "waiting", what)
	}
}

// Stalled returns nil while the watched work progresses, else an error
// saying for how long and what waits: for readiness.
func (w *Watchdog) Stalled() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == stateOK {
		return nil
	}
	return fmt.Errorf("%s stalled for %s (%s)", w.opts.Name, w.stalled.Round(time.Second), w.what)
}

// Dead returns nil unless the stall has lasted DeadAfter: for liveness.
func (w *Watchdog) Dead() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateDead {
		return nil
	}
	return fmt.Errorf("%s stalled for %s, past the liveness bound %s (%s)", w.opts.Name, w.stalled.Round(time.Second), w.opts.DeadAfter, w.what)
}

// Metrics are the watchdogs' Prometheus metrics.
type Metrics struct {
	stalled     *prometheus.GaugeVec
	stalls      *prometheus.CounterVec
	probeErrors *prometheus.CounterVec
}

// NewMetrics registers the watchdog metrics of a process named ns (e.g.
// "internal": internal_watchdog_stalled_seconds{watch}) with reg.
func NewMetrics(reg prometheus.Registerer, ns string) *Metrics {
	m := &Metrics{
		stalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "watchdog_stalled_seconds",
			Help: "How long work has waited without progress, as last probed (0: progressing).",
		}, []string{"watch"}),
		stalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "watchdog_stalls_total",
			Help: "Stalls that lasted past the readiness bound.",
		}, []string{"watch"}),
		probeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "watchdog_probe_errors_total",
			Help: "Probes that could not tell (the last verdict was kept).",
		}, []string{"watch"}),
	}
	reg.MustRegister(m.stalled, m.stalls, m.probeErrors)
	return m
}
