package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's own Prometheus metrics, served at /metrics
// with the HTTP (echoapp) and WebSocket (wshub) ones.
type metrics struct {
	feedChanges prometheus.Counter
	faults      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		feedChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "external_feed_changes_served_total", Help: "Changes returned by the change feed.",
		}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "external_injected_faults_total", Help: "Faults injected, by kind.",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.feedChanges, m.faults)
	return m
}
