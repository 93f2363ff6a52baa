package activities

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatpoc/chat-poc/internal/feed"
)

// Poll outcomes, the values of sync_polls_total's outcome label.
const (
	pollOK    = "ok"
	pollError = "error"
)

// Metrics are the sync activity's Prometheus metrics.
type Metrics struct {
	polls         *prometheus.CounterVec
	pollSeconds   prometheus.Histogram
	changes       *prometheus.CounterVec
	batchSize     prometheus.Histogram
	produceSecs   prometheus.Histogram
	publishErrors prometheus.Counter
	deadLetters   prometheus.Counter
	pagesShrunk   prometheus.Counter
	unconfirmed   *prometheus.CounterVec
	active        prometheus.Gauge
	lastCheckNano atomic.Int64 // unix nanos of the last checkpoint this worker confirmed
	stall         stallWatch   // for the worker's watchdog (Probe)
}

// NewMetrics creates the metrics and registers them with reg (none when nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sync_polls_total", Help: "Polls of external's change feed, by outcome (ok, error).",
		}, []string{"outcome"}),
		pollSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sync_poll_seconds", Help: "Duration of successful feed polls, long-poll wait included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 12),
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sync_changes_published_total", Help: "Changes published to Kafka, by cluster and kind.",
		}, []string{"cluster", "kind"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sync_batch_size", Help: "Changes per Kafka transaction (one feed page).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		produceSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sync_produce_seconds",
			Help:    "Time from a poll's answer to the transaction holding its changes being committed and visible to read_committed consumers.",
			Buckets: []float64{.001, .002, .004, .006, .008, .010, .015, .020, .030, .050, .075, .1, .2, .5, 1, 2, 5},
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sync_publish_errors_total", Help: "Failed Kafka transactions (retried).",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sync_dead_letters_total",
			Help: "Feed changes that could not be published (malformed, or invalid as a change record: an ID over 128 bytes, content not UTF-8, ...), sent with their reason to the dead-letter topic external-feed.dlq in their page's transaction; counted once it committed.",
		}),
		pagesShrunk: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sync_pages_too_large_total",
			Help: "Feed pages larger than the sync reads (16 MiB), not read: the same cursor was polled again for half as many changes.",
		}),
		unconfirmed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sync_commits_unconfirmed_total",
			Help: "Commits a Kafka cluster acknowledged whose records were not visible to read_committed consumers in time, by cluster; each batch was published on the next cluster. Rising while the cluster is up: look for a hanging transaction.",
		}, []string{"cluster"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sync_active", Help: "1 while this worker runs the sync activity.",
		}),
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sync_checkpoint_age_seconds",
		Help: "Seconds since this worker last confirmed the checkpoint current (a poll found nothing new, or Kafka acknowledged a page); 0 before it ever did.",
	}, func() float64 {
		last := m.lastCheckNano.Load()
		if last == 0 {
			return 0
		}
		return time.Since(time.Unix(0, last)).Seconds()
	})
	if reg != nil {
		reg.MustRegister(m.polls, m.pollSeconds, m.changes, m.batchSize, m.produceSecs, m.publishErrors,
			m.deadLetters, m.pagesShrunk, m.unconfirmed, m.active, age)
	}
	return m
}

// Unconfirmed counts a commit on cluster that was not confirmed visible; it
// is the publisher's Options.OnUnconfirmed.
func (m *Metrics) Unconfirmed(cluster string) { m.unconfirmed.WithLabelValues(cluster).Inc() }

func (m *Metrics) checkpoint(at time.Time) { m.lastCheckNano.Store(at.UnixNano()) }

// published counts a page's changes published on cluster, by kind, and its
// dead letters (whose kinds are whatever the feed sent: no label).
func (m *Metrics) published(cluster string, changes []feed.Change, dead []DeadLetter, took time.Duration) {
	next := 0 // the next dead letter; they are in page order
	for i, c := range changes {
		if next < len(dead) && dead[next].Index == i {
			next++
			continue
		}
		m.changes.WithLabelValues(cluster, string(c.Kind)).Inc()
	}
	m.deadLetters.Add(float64(len(dead)))
	m.batchSize.Observe(float64(len(changes)))
	m.produceSecs.Observe(took.Seconds())
}
