package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's own Prometheus metrics, served at /metrics with
// the HTTP (echoapp), WebSocket (wshub) and live path's ones.
type metrics struct {
	cacheReadErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		cacheReadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "internal_cache_read_errors_total", Help: "Loads that could not read Redis and used memory instead.",
		}),
	}
	reg.MustRegister(m.cacheReadErrors)
	return m
}
