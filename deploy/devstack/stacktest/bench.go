package stacktest

import (
	"math"
	"slices"
	"testing"
	"time"
)

// ReportDurations reports p50, p99 and max of ds as benchmark figures
// name-p50-UNIT, name-p99-UNIT and name-max-UNIT, in unit (time.Millisecond:
// "ms", time.Second: "s"), and fails the benchmark if there are none.
func ReportDurations(b *testing.B, name string, unit time.Duration, ds []time.Duration) {
	b.Helper()
	if len(ds) == 0 {
		b.Fatalf("no %s samples", name)
	}
	ds = slices.Sorted(slices.Values(ds))
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(math.Ceil(p*float64(len(ds))))-1)] }
	suffix := "ms"
	if unit == time.Second {
		suffix = "s"
	}
	div := float64(unit)
	b.ReportMetric(float64(q(0.5))/div, name+"-p50-"+suffix)
	b.ReportMetric(float64(q(0.99))/div, name+"-p99-"+suffix)
	b.ReportMetric(float64(ds[len(ds)-1])/div, name+"-max-"+suffix)
	b.Logf("%s over %d samples: p50 %s, p99 %s, max %s", name, len(ds), q(0.5), q(0.99), ds[len(ds)-1])
}

// ProbeRun reports whether this is the go tool's first, b.N = 1 run of a
// benchmark, which the stack's benchmarks skip: they are run with
// -benchtime Nx and report their own figures.
func ProbeRun(b *testing.B) bool { return b.N == 1 }
