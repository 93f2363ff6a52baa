package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
)

// BenchmarkWriteToLongPoll measures, against the stack's real external
// binary, the time from sending a message write to a waiting long-poll of
// the change feed returning it: what the sync's poll latency starts from.
func BenchmarkWriteToLongPoll(b *testing.B) {
	stack := stacktest.Connect(b)
	base := stacktest.Env(b, stack, devstack.EnvExternalURL)
	chat := post(b, base+"/chats", "")
	cursor := feed(b, base, "", "0s").Cursor
	client := &http.Client{Timeout: time.Minute}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		type page struct {
			n      int
			cursor string
			err    error
		}
		got := make(chan page, 1)
		go func() {
			p, err := feedWith(client, base, cursor, "20s")
			got <- page{len(p.Changes), p.Cursor, err}
		}()
		// Give the poll time to reach the server and sleep there; this
		// is outside what is measured.
		b.StopTimer()
		time.Sleep(5 * time.Millisecond)
		b.StartTimer()
		start := time.Now()
		post(b, base+"/chat/"+chat, fmt.Sprintf(`{"content":"bench %d"}`, i))
		p := <-got
		if p.err != nil || p.n == 0 {
			b.Fatalf("long-poll: %d changes, %v", p.n, p.err)
		}
		lat = append(lat, time.Since(start))
		cursor = p.cursor
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// BenchmarkLoadgenThroughput measures how many acknowledged writes per second
// the real external binary takes from the load generator's mix.
func BenchmarkLoadgenThroughput(b *testing.B) {
	stack := stacktest.Connect(b)
	base := stacktest.Env(b, stack, devstack.EnvExternalURL)
	b.ResetTimer()
	st, err := loadgen.Run(context.Background(), loadgen.Config{
		BaseURL: base, Rate: 100_000, MaxOps: max(b.N, 100), Chats: 50, Concurrency: 16, Seed: 1,
	}, discard{}, nil)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Acked)/st.Elapsed.Seconds(), "acked-writes/s")
	b.ReportMetric(float64(st.Failed), "failed")
	reportPercentiles(b, st.AckLatency)
}

type discard struct{}

func (discard) Record(loadgen.Record) error { return nil }

func reportPercentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	q := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(.50), "p50-ms")
	b.ReportMetric(q(.99), "p99-ms")
	b.ReportMetric(float64(d[len(d)-1].Microseconds())/1000, "max-ms")
}

func post(b *testing.B, url, body string) string {
	b.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&v) != nil {
		b.Fatalf("POST %s: %s", url, resp.Status)
	}
	return v.ID
}

type feedPage struct {
	Changes []json.RawMessage `json:"changes"`
	Cursor  string            `json:"cursor"`
}

func feed(b *testing.B, base, cursor, wait string) feedPage {
	b.Helper()
	p, err := feedWith(http.DefaultClient, base, cursor, wait)
	if err != nil {
		b.Fatal(err)
	}
	// Drain to the end so the next poll waits for a new change.
	for len(p.Changes) > 0 {
		next, err := feedWith(http.DefaultClient, base, p.Cursor, "0s")
		if err != nil {
			b.Fatal(err)
		}
		if len(next.Changes) == 0 {
			return next
		}
		p = next
	}
	return p
}

func feedWith(c *http.Client, base, cursor, wait string) (feedPage, error) {
	resp, err := c.Get(base + "/api/changes?limit=1000&wait=" + wait + "&cursor=" + cursor)
	if err != nil {
		return feedPage{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return feedPage{}, fmt.Errorf("feed: %s", resp.Status)
	}
	var p feedPage
	err = json.NewDecoder(resp.Body).Decode(&p)
	return p, err
}
