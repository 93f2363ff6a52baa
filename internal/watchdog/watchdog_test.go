package watchdog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// scripted is a probe that answers what the test last set.
type scripted struct {
	stalled time.Duration
	err     error
}

func (s *scripted) probe(context.Context) (time.Duration, string, error) {
	return s.stalled, "chats[0]: position 3, committed end 9", s.err
}

func newTest(t *testing.T) (*Watchdog, *scripted, *prometheus.Registry, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	p := &scripted{}
	w, err := New(p.probe, Options{Name: "test-consumer", Every: time.Second, ProbeTimeout: time.Second,
		StallAfter: 15 * time.Second, DeadAfter: time.Minute}, NewMetrics(reg, "test"), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return w, p, reg, &logs
}

func TestVerdictFollowsTheBounds(t *testing.T) {
	t.Parallel()
	w, p, reg, logs := newTest(t)
	ctx := context.Background()
	steps := []struct {
		name          string
		stalled       time.Duration
		ready, live   bool
		wantLogsAdded string
	}{
		{"progressing", 0, true, true, ""},
		{"waiting, under the readiness bound", 14 * time.Second, true, true, ""},
		{"past the readiness bound", 15 * time.Second, false, true, "stalled: work waiting"},
		{"still stalled: logged once", 30 * time.Second, false, true, ""},
		{"past the liveness bound", time.Minute, false, false, "past the liveness bound"},
		{"progressing again", 0, true, true, "progressing again"},
	}
	for _, s := range steps {
		before := logs.Len()
		p.stalled = s.stalled
		w.Check(ctx)
		if got := w.Stalled() == nil; got != s.ready {
			t.Errorf("%s: ready %v, want %v (%v)", s.name, got, s.ready, w.Stalled())
		}
		if got := w.Dead() == nil; got != s.live {
			t.Errorf("%s: live %v, want %v (%v)", s.name, got, s.live, w.Dead())
		}
		added := logs.String()[before:]
		if s.wantLogsAdded == "" && added != "" {
			t.Errorf("%s: logged %q, want nothing", s.name, added)
		}
		if s.wantLogsAdded != "" && (!strings.Contains(added, s.wantLogsAdded) || strings.Count(added, "\n") != 1) {
			t.Errorf("%s: logged %q, want one line with %q", s.name, added, s.wantLogsAdded)
		}
		if got := testutil.ToFloat64(w.metrics.stalled.WithLabelValues("test-consumer")); got != s.stalled.Seconds() {
			t.Errorf("%s: gauge %v, want %v", s.name, got, s.stalled.Seconds())
		}
	}
	if got := testutil.ToFloat64(w.metrics.stalls.WithLabelValues("test-consumer")); got != 1 {
		t.Errorf("stalls counted %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "test_watchdog_stalled_seconds"); err != nil || n != 1 {
		t.Errorf("registered gauge series: %d, %v", n, err)
	}
}

func TestReasonNamesWhatWaits(t *testing.T) {
	t.Parallel()
	w, p, _, _ := newTest(t)
	p.stalled = 20 * time.Second
	w.Check(context.Background())
	err := w.Stalled()
	if err == nil || !strings.Contains(err.Error(), "test-consumer stalled for 20s") || !strings.Contains(err.Error(), "chats[0]") {
		t.Fatalf("Stalled() = %v, want the watch, the time and what waits", err)
	}
}

func TestProbeErrorKeepsTheVerdict(t *testing.T) {
	t.Parallel()
	w, p, _, _ := newTest(t)
	p.stalled = 20 * time.Second
	w.Check(context.Background())
	p.stalled, p.err = 0, errors.New("kafka unreachable")
	w.Check(context.Background())
	if w.Stalled() == nil {
		t.Fatal("a probe that could not tell cleared the stall")
	}
	if got := testutil.ToFloat64(w.metrics.probeErrors.WithLabelValues("test-consumer")); got != 1 {
		t.Errorf("probe errors counted %v, want 1", got)
	}
}

func TestRunProbesUntilCancelled(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	probed := make(chan struct{}, 1)
	w, err := New(func(context.Context) (time.Duration, string, error) {
		select {
		case probed <- struct{}{}:
		default:
		}
		return time.Hour, "everything", nil
	}, Options{Name: "run", Every: 10 * time.Millisecond, ProbeTimeout: time.Second, StallAfter: time.Second, DeadAfter: time.Minute},
		NewMetrics(reg, "test"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	select {
	case <-probed:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not probe within 10 s")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if w.Dead() == nil {
		t.Error("an hour-long stall did not fail liveness")
	}
}

func TestOptionsAreChecked(t *testing.T) {
	t.Parallel()
	probe := (&scripted{}).probe
	for name, o := range map[string]Options{
		"no name":               {Every: time.Second, ProbeTimeout: time.Second, StallAfter: time.Second, DeadAfter: time.Minute},
		"no interval":           {Name: "x", ProbeTimeout: time.Second, StallAfter: time.Second, DeadAfter: time.Minute},
		"dead before stalled":   {Name: "x", Every: time.Second, ProbeTimeout: time.Second, StallAfter: time.Minute, DeadAfter: time.Second},
		"no stall bound":        {Name: "x", Every: time.Second, ProbeTimeout: time.Second, DeadAfter: time.Minute},
		"dead equal to stalled": {Name: "x", Every: time.Second, ProbeTimeout: time.Second, StallAfter: time.Minute, DeadAfter: time.Minute},
	} {
		if _, err := New(probe, o, NewMetrics(prometheus.NewRegistry(), "test"), slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
