// Package kafkaclient holds what every Kafka consumer of ours does the same
// way: librdkafka's log into our logger (debug contexts switched on by
// configuration), a close that cannot hold a shutdown, one log line per
// outage instead of one per client error, and a probe of the consumer's
// progress for a watchdog.
package kafkaclient

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"
)

// SetDebug switches librdkafka's debug contexts on in cm (a comma-separated
// list, e.g. "cgrp,fetch"); empty leaves them off.
func SetDebug(cm *kafka.ConfigMap, contexts string) error {
	if contexts == "" {
		return nil
	}
	return cm.SetKey("debug", contexts)
}

// ForwardLogs serves logs (a client's Logs() channel, created with
// go.logs.channel.enable) until it is closed. librdkafka's own lines go to
// log at debug level: what they report (a refused connection at every
// reconnect during an outage, a coordinator still loading) reaches us as
// client errors too, which the caller logs once per outage (Outage). Only a
// critical line (syslog severity 2 or less: a fatal error) is logged at
// error. With debug contexts on (debug), every line is logged at info: the
// operator asked for them, and the process's level need not change.
func ForwardLogs(logs chan kafka.LogEvent, log *slog.Logger, debug bool) {
	go func() {
		for l := range logs {
			level := slog.LevelDebug
			switch {
			case l.Level <= 2: // emerg, alert, crit
				level = slog.LevelError
			case debug:
				level = slog.LevelInfo
			}
			log.Log(context.Background(), level, "librdkafka", "tag", l.Tag, "syslog_level", l.Level, "text", l.Message)
		}
	}()
}

// CloseConsumer closes c, giving up after timeout; it reports whether the
// close finished. A close leaves the group and commits, and can wait on
// brokers that do not answer; after a fatal error (a fenced static member)
// confluent-kafka-go v2.11.1's Close never returns at all: it waits for a
// close that librdkafka refused to start (fixed upstream after that
// release). A close that overruns is left to finish, or not, in the
// background: the process is on its way out.
func CloseConsumer(c *kafka.Consumer, timeout time.Duration) bool {
	return closeBounded(func() { _ = c.Close() }, timeout)
}

// CloseProducer purges what p still has queued or in flight and closes it,
// giving up after timeout; it reports whether the close finished.
// librdkafka's destroy can wait on broker threads, and a dead cluster must
// not hold the caller.
func CloseProducer(p *kafka.Producer, timeout time.Duration) bool {
	return closeBounded(func() {
		_ = p.Purge(kafka.PurgeQueue | kafka.PurgeInFlight | kafka.PurgeNonBlocking)
		p.Close()
	}, timeout)
}

// closeBounded runs close, waiting for it at most timeout.
func closeBounded(closeFn func(), timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		closeFn()
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// Outage turns a client's stream of "all brokers down" errors (librdkafka
// reports one at every reconnect attempt, several a second) into two log
// lines: unreachable, and reachable again after so long. It is safe for
// concurrent use.
type Outage struct {
	log   *slog.Logger
	gauge prometheus.Gauge

	mu    sync.Mutex
	since time.Time // zero: reachable
}

// NewOutage returns an outage tracker that logs to log and sets gauge (1
// while unreachable).
func NewOutage(log *slog.Logger, gauge prometheus.Gauge) *Outage {
	return &Outage{log: log, gauge: gauge}
}

// ClientError notes a client error: "all brokers down" starts an outage
// (logged once); any other error is left to the caller.
func (o *Outage) ClientError(e kafka.Error) {
	if e.Code() != kafka.ErrAllBrokersDown {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.since.IsZero() {
		return
	}
	o.since = time.Now()
	o.gauge.Set(1)
	o.log.Warn("Kafka unreachable; the client keeps retrying", "err", e)
}

// Down reports whether an outage is in progress.
func (o *Outage) Down() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.since.IsZero()
}

// Reachable notes evidence that the cluster answers the client again (a
// record arrived, the client's metadata request succeeded): an outage in
// progress ends, logged with its length.
func (o *Outage) Reachable() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() {
		return
	}
	o.log.Info("Kafka reachable again", "after", time.Since(o.since).Round(100*time.Millisecond))
	o.since = time.Time{}
	o.gauge.Set(0)
}

// FatalError wraps a fatal client error: the client instance is unusable
// and the process must be restarted (its supervisor does so).
func FatalError(e kafka.Error) error {
	return fmt.Errorf("kafka consumer failed fatally (the process restarts to get a new client): %w", e)
}
