package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/deploy/browsertest"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

// httpStatus GETs url and returns the status code and body.
func httpStatus(url string) (int, string, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), nil
}

// TestStalledLiveConsumerIsVisibleAndFailsLiveness stops the live
// consumer's fetches (librdkafka's pause, as a wedged client's fetches
// would stop) while a record waits on its topic: within the stall bound
// /readyz fails naming the partition, the page's indicator says
// "stalled", the watchdog's gauge counts; past the liveness bound /healthz
// fails too (so the launcher or Kubernetes restarts the process). Fetching
// again, everything is green again.
func TestStalledLiveConsumerIsVisibleAndFailsLiveness(t *testing.T) {
	t.Parallel()
	const stallAfter, deadAfter = 3 * time.Second, 8 * time.Second
	e := newAppEnv(t, func(c *Config) { c.StallAfter, c.DeadAfter = stallAfter, deadAfter })
	e.waitConsuming()
	stacktest.WaitHTTP(t, e.url+"/readyz", http.StatusOK, "ok", time.Minute)
	stacktest.WaitHTTP(t, e.url+"/healthz", http.StatusOK, "ok", time.Minute)

	tab := browsertest.New(t).NewTab(t)
	tab.Navigate(e.url)
	open := tidAt("conn-status", "data-state", "open")
	tab.WaitVisible(open)

	assigned, err := e.app.kafka.Assignment()
	if err != nil || len(assigned) == 0 {
		t.Fatalf("assignment %v, %v", assigned, err)
	}
	if err := e.app.kafka.Pause(assigned); err != nil {
		t.Fatal(err)
	}
	e.produceChats(chatdbtest.ChatNew(e.prefix+"-waiting", 1))
	produced := time.Now()

	stacktest.WaitHTTP(t, e.url+"/readyz", http.StatusServiceUnavailable, "live-consumer stalled", time.Minute)
	t.Logf("/readyz failed %s after the record waiting (bound %s, probed every 2 s)", time.Since(produced).Round(100*time.Millisecond), stallAfter)
	if _, body, _ := httpStatus(e.url + "/readyz"); !strings.Contains(body, e.cfg.ChatTopic) {
		t.Errorf("/readyz: %q does not name the waiting partition's topic %s", body, e.cfg.ChatTopic)
	}
	tab.WaitVisible(tidAt("conn-status", "data-state", "stalled"))
	if got := tab.Text(tid("conn-status")); !strings.Contains(got, "stalled") {
		t.Errorf("indicator %q, want it to say stalled", got)
	}
	if code, _, _ := httpStatus(e.url + "/healthz"); code != http.StatusOK && time.Since(produced) < deadAfter {
		t.Errorf("/healthz failed %s after the record, before the liveness bound %s", time.Since(produced), deadAfter)
	}
	stacktest.WaitHTTP(t, e.url+"/healthz", http.StatusServiceUnavailable, "past the liveness bound", time.Minute)
	t.Logf("/healthz failed %s after the record (bound %s)", time.Since(produced).Round(100*time.Millisecond), deadAfter)
	mf, err := stacktest.ScrapeMetrics(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var stalled, stalls float64
	for _, m := range mf["internal_watchdog_stalled_seconds"].GetMetric() {
		stalled = m.GetGauge().GetValue()
	}
	for _, m := range mf["internal_watchdog_stalls_total"].GetMetric() {
		stalls = m.GetCounter().GetValue()
	}
	if stalled < deadAfter.Seconds() || stalls != 1 {
		t.Errorf("internal_watchdog_stalled_seconds %v (want >= %v), internal_watchdog_stalls_total %v (want 1)", stalled, deadAfter.Seconds(), stalls)
	}

	if err := e.app.kafka.Resume(assigned); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitHTTP(t, e.url+"/readyz", http.StatusOK, "ok", time.Minute)
	stacktest.WaitHTTP(t, e.url+"/healthz", http.StatusOK, "ok", time.Minute)
	tab.WaitVisible(open)
}
