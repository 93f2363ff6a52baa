package live

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatpoc/chat-poc/internal/change"
)

// VersionReader reads a message's stored version from the database the
// loads read (Postgres; region b's instances read the standby).
type VersionReader interface {
	MessageVersion(ctx context.Context, id string) (int64, bool, error)
}

// Timing and bounds of PostgresLag.
const (
	// lagSampleEvery is how often a cached change is taken as a sample: the
	// gauge's resolution, and one indexed Postgres read a second at most.
	lagSampleEvery = time.Second
	// lagProbeEvery is how often the oldest samples are checked.
	lagProbeEvery = time.Second
	// lagProbeTimeout bounds one probe's Postgres reads.
	lagProbeTimeout = 2 * time.Second
	// lagChecksPerProbe bounds the samples one probe checks (a writer that
	// caught up clears ~lagChecksPerProbe seconds of samples a probe).
	lagChecksPerProbe = 60
	// maxLagSamples bounds the samples held (one a second: 34 minutes);
	// when full, no new one is taken — the oldest decides the gauge anyway.
	maxLagSamples = 2048
	// lagSampleLimit is how many windows old a sample may grow before it
	// is given up (a change the writer dead-lettered never reaches
	// Postgres): the gauge saturates at that many windows while the writer
	// stays behind, and falls back once one such change is given up.
	lagSampleLimit = 2
)

// PostgresLag measures how far Postgres is behind what the cache holds —
// the gap the cache's window must cover: once a second it takes a message
// the cache just stored (its version, and when), and a probe reads from
// Postgres whether that version (or a newer one) is stored yet. The oldest
// sample not stored yet gives internal_cache_postgres_behind_seconds; the
// cache's window is internal_cache_window_seconds. When the first nears the
// second, entries expire (or are evicted) before the writer stored them, and
// a load in that gap shows an older version than the newest (never to a
// client that was sent the newer one).
type PostgresLag struct {
	db     VersionReader
	window time.Duration
	log    *slog.Logger

	mu       sync.Mutex
	samples  []lagSample // oldest first
	lastTake time.Time

	behind      prometheus.Gauge
	probeErrors prometheus.Counter
	givenUp     prometheus.Counter
}

type lagSample struct {
	at      time.Time
	id      string
	version int64
}

// NewPostgresLag returns a tracker reading db, for a cache whose entries
// live window, its metrics registered with reg.
func NewPostgresLag(db VersionReader, window time.Duration, reg prometheus.Registerer, log *slog.Logger) *PostgresLag {
	l := &PostgresLag{
		db: db, window: window, log: log,
		behind: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "internal_cache_postgres_behind_seconds",
			Help: "Age of the oldest change this instance cached that Postgres (as this instance reads it) does not hold yet: how much of the cache window the writer's lag takes. Sampled once a second; 0 when Postgres holds every sample.",
		}),
		probeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "internal_cache_postgres_probe_errors_total",
			Help: "Probes of internal_cache_postgres_behind_seconds that could not read Postgres (the gauge keeps growing with the oldest sample's age).",
		}),
		givenUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "internal_cache_postgres_samples_given_up_total",
			Help: "Samples not in Postgres after twice the cache window, given up (a change the writer dead-lettered, or a writer stopped for that long).",
		}),
	}
	windowGauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "internal_cache_window_seconds",
		Help: "How long a cached entry lives after its last write (INTERNAL_CACHE_TTL): the writer's lag must stay well below it.",
	})
	windowGauge.Set(window.Seconds())
	reg.MustRegister(l.behind, l.probeErrors, l.givenUp, windowGauge)
	return l
}

// Cached takes m, just stored in the cache, as a sample if none was taken
// within lagSampleEvery.
func (l *PostgresLag) Cached(m change.Message) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastTake) < lagSampleEvery || len(l.samples) >= maxLagSamples {
		return
	}
	l.lastTake = now
	l.samples = append(l.samples, lagSample{at: now, id: m.ID, version: m.Version})
}

// Run probes every lagProbeEvery until ctx ends.
func (l *PostgresLag) Run(ctx context.Context) {
	t := time.NewTicker(lagProbeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.probe(ctx)
		}
	}
}

// probe drops the oldest samples Postgres holds (at most
// lagChecksPerProbe), and those given up, and sets the gauge from the
// oldest left.
func (l *PostgresLag) probe(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, lagProbeTimeout)
	defer cancel()
	for range lagChecksPerProbe {
		s, ok := l.oldest()
		if !ok {
			break
		}
		if time.Since(s.at) > lagSampleLimit*l.window {
			l.givenUp.Inc()
			l.log.Warn("a cached change is still not in Postgres after twice the cache window; given up as a sample",
				"message", s.id, "version", s.version, "window", l.window)
			l.drop()
			continue
		}
		v, stored, err := l.db.MessageVersion(ctx, s.id)
		if err != nil {
			l.probeErrors.Inc()
			l.log.Debug("probe Postgres's lag behind the cache", "err", err)
			break
		}
		if !stored || v < s.version {
			break
		}
		l.drop()
	}
	behind := 0.0
	if s, ok := l.oldest(); ok {
		behind = time.Since(s.at).Seconds()
	}
	l.behind.Set(behind)
}

func (l *PostgresLag) oldest() (lagSample, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) == 0 {
		return lagSample{}, false
	}
	return l.samples[0], true
}

func (l *PostgresLag) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.samples = l.samples[1:]
	if len(l.samples) == 0 {
		l.samples = nil // let the backing array go
	}
}
