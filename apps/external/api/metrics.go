package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus metrics, served at /metrics.
type metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	wsClients     prometheus.Gauge
	wsBadFrames   prometheus.Counter
	wsSlowDropped prometheus.Counter
	feedChanges   prometheus.Counter
	faults        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "external_http_requests_total", Help: "HTTP requests by method, route and status.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "external_http_request_seconds", Help: "HTTP request latency by route (long-polls included).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		wsClients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "external_ws_clients", Help: "Connected WebSocket clients.",
		}),
		wsBadFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "external_ws_bad_frames_total", Help: "WebSocket connections closed for an invalid frame.",
		}),
		wsSlowDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "external_ws_slow_clients_dropped_total", Help: "WebSocket clients closed because they fell behind.",
		}),
		feedChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "external_feed_changes_served_total", Help: "Changes returned by the change feed.",
		}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "external_injected_faults_total", Help: "Faults injected, by kind.",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.requests, m.latency, m.wsClients, m.wsBadFrames, m.wsSlowDropped, m.feedChanges, m.faults)
	return m
}

// observe counts every request and its latency, by route template (not raw
// path, so IDs do not explode the label set). It writes errors through the
// error handler itself so the status it records is the one sent.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		began := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		status := c.Response().Status
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		if status == 0 {
			status = http.StatusOK
		}
		s.metrics.requests.WithLabelValues(c.Request().Method, route, strconv.Itoa(status)).Inc()
		s.metrics.latency.WithLabelValues(route).Observe(time.Since(began).Seconds())
		return nil
	}
}
