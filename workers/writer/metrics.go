package main

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// metrics are the writer's Prometheus metrics.
type metrics struct {
	records     *prometheus.CounterVec
	batchSize   prometheus.Histogram
	applyTime   prometheus.Histogram
	delay       prometheus.Histogram
	lagRecords  *prometheus.GaugeVec
	assigned    prometheus.Gauge
	open        prometheus.Gauge
	rewinds     prometheus.Counter
	stopped     prometheus.Gauge
	kafkaErrors prometheus.Counter
	kafkaDown   prometheus.Gauge
}

// Outcomes of a record (label "outcome" of writer_records_total).
const (
	outcomeWritten      = "written"       // changed a row
	outcomeStale        = "stale"         // not newer than the stored row: a duplicate, replay or mirrored copy
	outcomeDeadLettered = "dead_lettered" // malformed, sent to the dead-letter topic
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "writer_records_total",
			Help: "Records committed to Postgres, by kind (message, chat) and outcome (written, stale, dead_lettered).",
		}, []string{"kind", "outcome"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "writer_batch_size",
			Help:    "Records per committed batch (one Postgres transaction).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7), // 1 .. 4096
		}),
		applyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "writer_apply_seconds",
			Help:    "Duration of a batch's upsert transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
		}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "writer_record_delay_seconds",
			Help:    "From a record's Kafka timestamp (when the sync produced it) to the commit of its row.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16), // 1 ms .. 33 s
		}),
		lagRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "writer_lag_records",
			Help: "Records of an assigned partition not yet read: its high watermark minus the writer's position.",
		}, []string{"topic", "partition"}),
		assigned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "writer_assigned_partitions",
			Help: "Partitions this writer owns in its consumer group.",
		}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "writer_batch_open_records",
			Help: "Records read into the open batch, not yet committed.",
		}),
		rewinds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "writer_rewinds_total",
			Help: "Batches dropped and read again from the offsets in Postgres (Postgres unreachable or failed over, a rebalance in flight, a dead letter not acknowledged).",
		}),
		stopped: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "writer_partitions_stopped",
			Help: "Assigned partitions not read because their offset in Postgres does not match their log (topic created again, cluster rebuilt, records deleted unread); see README.",
		}),
		kafkaErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "writer_kafka_errors_total",
			Help: "Errors the Kafka client reported and retries by itself (brokers unreachable, ...).",
		}),
		kafkaDown: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "writer_kafka_unreachable", Help: "1 while the writer's Kafka cluster is unreachable.",
		}),
	}
	reg.MustRegister(m.records, m.batchSize, m.applyTime, m.delay, m.lagRecords, m.assigned, m.open, m.rewinds, m.stopped, m.kafkaErrors, m.kafkaDown)
	for _, k := range []change.Kind{change.KindMessage, change.KindChat} {
		for _, o := range []string{outcomeWritten, outcomeStale, outcomeDeadLettered} {
			m.records.WithLabelValues(k.String(), o)
		}
	}
	return m
}

// observeBatch records a batch committed at now.
func (m *metrics) observeBatch(b *batch, a chatdb.Applied, took time.Duration, now time.Time) {
	m.batchSize.Observe(float64(b.size))
	m.applyTime.Observe(took.Seconds())
	for _, ts := range b.stamps {
		if !ts.IsZero() {
			m.delay.Observe(now.Sub(ts).Seconds())
		}
	}
	m.records.WithLabelValues(change.KindMessage.String(), outcomeWritten).Add(float64(a.MessagesWritten))
	m.records.WithLabelValues(change.KindMessage.String(), outcomeStale).Add(float64(a.MessagesStale))
	m.records.WithLabelValues(change.KindChat.String(), outcomeWritten).Add(float64(a.ChatsWritten))
	m.records.WithLabelValues(change.KindChat.String(), outcomeStale).Add(float64(a.ChatsStale))
	for _, d := range b.dead {
		m.records.WithLabelValues(d.kind.String(), outcomeDeadLettered).Inc()
	}
}

func (m *metrics) lag(k partitionKey, records int64) {
	m.lagRecords.WithLabelValues(k.topic, strconv.Itoa(int(k.partition))).Set(float64(records))
}

// forget drops a revoked partition's gauge.
func (m *metrics) forget(k partitionKey) {
	m.lagRecords.DeleteLabelValues(k.topic, strconv.Itoa(int(k.partition)))
}
