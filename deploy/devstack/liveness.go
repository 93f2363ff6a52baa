package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Liveness probe of our services, as a Kubernetes livenessProbe: a service
// that still runs but says it is dead (its progress watchdog saw it stalled)
// is terminated, and the restart policy in watch starts it again as after a
// crash. The service decides when it is dead; the launcher only has to notice
// within seconds and not be fooled by one slow answer.
const (
	// livenessPeriod is how often a ready service's LiveURL is probed: soon
	// enough after its watchdog gives up (a minute of stall), cheap enough
	// for eleven services on two cores, and slow enough that a process
	// frozen for a few seconds on purpose (the chaos suite's zombie sync
	// worker, SIGSTOPped until another worker takes over) is not killed
	// before it is thawed: about 17 s pass before the third failure.
	livenessPeriod = 5 * time.Second
	// livenessTimeout bounds one probe. /healthz reads the watchdog's verdict
	// and does no I/O, so a service that cannot answer it in 2 s has a wedged
	// HTTP server or scheduler, which is as dead as a 503.
	livenessTimeout = 2 * time.Second
	// livenessFailures consecutive failures make a service unhealthy, so one
	// slow answer in a GC pause or on a CPU-starved machine never costs a
	// restart (Kubernetes' default failureThreshold is 3 too).
	livenessFailures = 3
	// livenessGrace is how long an unhealthy service gets between SIGTERM and
	// SIGKILL. Shorter than stopGrace and than our services' own shutdown
	// timeouts: what their SIGTERM path gets done in 5 s (leave the consumer
	// group, hand the sync activity over, abort an open transaction — each a
	// loopback round trip) shortens the recovery, and what it does not get done
	// is likely waiting on the very thing that stalled; cutting it off is no
	// worse than the crash every service must survive anyway.
	livenessGrace = 5 * time.Second
)

// livenessPolicy is the timing of liveness probes: the constants above in a
// stack from newStack, shorter ones in tests.
type livenessPolicy struct {
	period   time.Duration // between probes
	timeout  time.Duration // of one probe
	failures int           // consecutive failures that make a service unhealthy
	grace    time.Duration // between SIGTERM and SIGKILL of an unhealthy service
}

func defaultLiveness() livenessPolicy {
	return livenessPolicy{period: livenessPeriod, timeout: livenessTimeout, failures: livenessFailures, grace: livenessGrace}
}

// startLiveness starts probing p, the ready process of service c, until ctx
// ends. ctx is p's own: it ends when p exits (watch), when c is stopped or
// killed on purpose (own), and when the stack closes (it derives from s.life).
// Probes start under mu, and Close ends s.life under mu, so none starts after
// Close began waiting for them.
func (s *Stack) startLiveness(ctx context.Context, c *component, p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return // exited, stopped or closed while it became ready
	}
	s.probing.Add(1)
	go func() {
		defer s.probing.Done()
		s.probeLiveness(ctx, c, p)
	}()
}

// probeLiveness probes c's LiveURL every period while p runs. After
// policy.failures consecutive failures it reports c UNHEALTHY and terminates
// p, whose exit watch then sees as unexpected and handles as a crash. It holds
// p, not c's current process, so it can never touch a later process of c.
// With NoRestart it only reports, and keeps probing.
func (s *Stack) probeLiveness(ctx context.Context, c *component, p *proc) {
	policy := s.liveness
	// A fresh connection per probe, as the kubelet's: a kept-alive connection
	// would bypass an accept loop that no longer accepts.
	client := &http.Client{Timeout: policy.timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(policy.period)
	defer tick.Stop()
	failures, reported := 0, false
	for {
		select {
		case <-tick.C:
		case <-p.wait():
			return
		case <-ctx.Done():
			return
		}
		err := liveProbe(ctx, client, c.liveURL)
		if ctx.Err() != nil || p.exited() {
			return // a probe of a process on its way out says nothing about its health
		}
		if err == nil {
			if reported {
				s.progress.line(c.name, "healthy again", "")
				s.opts.Logger.Info("service healthy again", "component", c.name, "pid", p.pid())
			}
			failures, reported = 0, false
			continue
		}
		failures++
		if failures < policy.failures || reported {
			continue
		}
		reported = true
		detail := fmt.Sprintf("%d liveness probes failed, last: %v", failures, err)
		if s.opts.NoRestart {
			s.progress.line(c.name, "UNHEALTHY", detail+"; not killed (no restart policy)")
			s.opts.Logger.Warn("service unhealthy; left running without a restart policy", "component", c.name, "pid", p.pid(), "failures", failures, "err", err)
			continue
		}
		// Where it is stuck, kept before it is gone (a frozen process
		// cannot answer; the failure is logged and the kill goes on).
		dump := s.path("logs", fmt.Sprintf("%s.goroutines-%s.txt", c.name, time.Now().Format("150405.000")))
		if derr := dumpGoroutines(s.life, c.liveURL, dump); derr != nil {
			dump = "none: " + derr.Error()
		}
		s.progress.line(c.name, "UNHEALTHY", fmt.Sprintf("%s; terminating pid %d (goroutine dump: %s)", detail, p.pid(), dump))
		s.opts.Logger.Warn("service unhealthy; terminating it", "component", c.name, "pid", p.pid(), "failures", failures, "err", err, "goroutines", dump)
		// SIGTERM and a short grace, as Stop does with a long one, but without
		// marking c as stopping: its exit must reach watch as a crash's does.
		// Only the stack's end cuts the grace short: a Stop meanwhile ends ctx
		// but must not turn this SIGTERM into a SIGKILL.
		if err := p.terminate(s.life, policy.grace); err != nil {
			s.opts.Logger.Warn("unhealthy service killed", "component", c.name, "err", err)
		}
		return
	}
}

// liveProbe GETs url once; nil means a 2xx answer. A failure names the status
// and the first line of the body, where our services say why they are dead.
func liveProbe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if first = strings.TrimSpace(first); first == "" {
		return errors.New(resp.Status)
	}
	return fmt.Errorf("%s: %s", resp.Status, first)
}
