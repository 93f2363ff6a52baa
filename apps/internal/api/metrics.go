package api

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests        *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	wsClients       prometheus.Gauge
	wsBadFrames     prometheus.Counter
	wsSlowDropped   prometheus.Counter
	cacheReadErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "internal_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "internal_http_request_seconds", Help: "HTTP request duration by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"route"}),
		wsClients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "internal_ws_clients", Help: "Connected WebSocket clients.",
		}),
		wsBadFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "internal_ws_bad_frames_total", Help: "WebSocket frames refused (not JSON text, too large, unknown type); each closes its connection.",
		}),
		wsSlowDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "internal_ws_slow_clients_dropped_total", Help: "WebSocket clients closed because they fell behind.",
		}),
		cacheReadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "internal_cache_read_errors_total", Help: "Loads that could not read Redis and used memory instead.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.wsClients, m.wsBadFrames, m.wsSlowDropped, m.cacheReadErrors)
	return m
}

// observe counts requests by route (the pattern, not the path, so IDs do
// not make new series).
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(c.Response().Status)).Inc()
		s.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		return nil
	}
}
