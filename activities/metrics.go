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
		reg.MustRegister(m.polls, m.pollSeconds, m.changes, m.batchSize, m.produceSecs, m.publishErrors, m.unconfirmed, m.active, age)
	}
	return m
}

// Unconfirmed counts a commit on cluster that was not confirmed visible; it
// is the publisher's Options.OnUnconfirmed.
func (m *Metrics) Unconfirmed(cluster string) { m.unconfirmed.WithLabelValues(cluster).Inc() }

func (m *Metrics) checkpoint(at time.Time) { m.lastCheckNano.Store(at.UnixNano()) }

func (m *Metrics) published(cluster string, changes []feed.Change, took time.Duration) {
	for _, c := range changes {
		m.changes.WithLabelValues(cluster, string(c.Kind)).Inc()
	}
	m.batchSize.Observe(float64(len(changes)))
	m.produceSecs.Observe(took.Seconds())
}
