// Package echoapp holds what the external and the internal app's Echo
// servers do the same way: panics recovered, a request body limit, one
// error handler, and request metrics by route.
package echoapp

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// New returns an Echo with errors written by onError, panics recovered,
// request bodies limited to bodyLimit (Echo's notation: "64K") and every
// request counted in <prefix>_http_requests_total{method,route,status} and
// <prefix>_http_request_seconds{route}, registered with reg.
func New(prefix string, reg prometheus.Registerer, onError echo.HTTPErrorHandler, bodyLimit string) *echo.Echo {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: prefix + "_http_requests_total", Help: "HTTP requests by method, route and status.",
	}, []string{"method", "route", "status"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: prefix + "_http_request_seconds", Help: "HTTP request latency by route (long-polls included).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route"})
	reg.MustRegister(requests, latency)

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = onError
	e.Use(middleware.Recover())
	// Counts by route template (not raw path, so IDs do not explode the
	// label set); writes errors through the error handler itself so the
	// status it records is the one sent.
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			began := time.Now()
			if err := next(c); err != nil {
				c.Error(err)
			}
			status, route := c.Response().Status, c.Path()
			if route == "" {
				route = "unmatched"
			}
			if status == 0 {
				status = http.StatusOK
			}
			requests.WithLabelValues(c.Request().Method, route, strconv.Itoa(status)).Inc()
			latency.WithLabelValues(route).Observe(time.Since(began).Seconds())
			return nil
		}
	})
	e.Use(middleware.BodyLimit(bodyLimit))
	return e
}
