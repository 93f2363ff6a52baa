package converge

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
)

// Latency is a distribution of durations: its size and nearest-rank
// percentiles. Min may be negative: the two ends of a measurement are two
// clocks (the load generator's and Postgres's or the recorder's), or one
// clock read before and after a race.
type Latency struct {
	Count                   int
	Min, P50, P95, P99, Max time.Duration
}

// Latencies is a distribution over all writes and per kind of write.
type Latencies struct {
	All  Latency                `json:"all"`
	ByOp map[loadgen.Op]Latency `json:"byOp,omitempty"`
}

// sample is one write's latency.
type sample struct {
	op loadgen.Op
	d  time.Duration
}

// summarize returns the distributions of samples.
func summarize(samples []sample) Latencies {
	all := make([]time.Duration, len(samples))
	byOp := map[loadgen.Op][]time.Duration{}
	for i, s := range samples {
		all[i] = s.d
		byOp[s.op] = append(byOp[s.op], s.d)
	}
	l := Latencies{All: distribution(all)}
	if len(byOp) > 0 {
		l.ByOp = make(map[loadgen.Op]Latency, len(byOp))
		for op, ds := range byOp {
			l.ByOp[op] = distribution(ds)
		}
	}
	return l
}

// distribution sorts ds and returns its percentiles.
func distribution(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[max(0, int(math.Ceil(p*float64(len(ds))))-1)] }
	return Latency{Count: len(ds), Min: ds[0], P50: q(0.5), P95: q(0.95), P99: q(0.99), Max: ds[len(ds)-1]}
}

// String is "n=COUNT min … p50 … p95 … p99 … max …", or "n=0".
func (l Latency) String() string {
	if l.Count == 0 {
		return "n=0"
	}
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return fmt.Sprintf("n=%d min %s p50 %s p95 %s p99 %s max %s", l.Count, r(l.Min), r(l.P50), r(l.P95), r(l.P99), r(l.Max))
}

// MarshalJSON writes the durations in milliseconds.
func (l Latency) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return json.Marshal(struct {
		Count int     `json:"count"`
		Min   float64 `json:"minMs"`
		P50   float64 `json:"p50Ms"`
		P95   float64 `json:"p95Ms"`
		P99   float64 `json:"p99Ms"`
		Max   float64 `json:"maxMs"`
	}{l.Count, ms(l.Min), ms(l.P50), ms(l.P95), ms(l.P99), ms(l.Max)})
}
