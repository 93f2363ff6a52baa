package feed_test

import (
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/internal/feed"
)

// checkBackoff draws n delays and checks each against the range of equal
// jitter, [c/2, c] with c = min(initial·2ⁱ, maxDelay), which also proves that
// they grow and stay within [0, maxDelay].
func checkBackoff(t *testing.T, b *feed.Backoff, initial, maxDelay time.Duration, n int) {
	t.Helper()
	ceiling := initial
	for i := range n {
		d := b.Next()
		if d < (ceiling+1)/2 || d > ceiling || d > maxDelay || d < 0 {
			t.Fatalf("delay %d = %s, want within [%s, %s] (max %s)", i, d, (ceiling+1)/2, ceiling, maxDelay)
		}
		if ceiling > maxDelay/2 {
			ceiling = maxDelay
		} else {
			ceiling *= 2
		}
	}
}

func TestBackoffGrowsWithinBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		b                 feed.Backoff
		initial, maxDelay time.Duration
	}{
		{"typical", feed.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, 100 * time.Millisecond, 5 * time.Second},
		{"max not a power of two of initial", feed.Backoff{Initial: 300 * time.Millisecond, Max: time.Second}, 300 * time.Millisecond, time.Second},
		{"max below initial", feed.Backoff{Initial: time.Second, Max: time.Millisecond}, time.Second, time.Second},
		{"zero value", feed.Backoff{}, 100 * time.Millisecond, 10 * time.Second},
		{"huge max", feed.Backoff{Initial: time.Nanosecond, Max: 1<<63 - 1}, time.Nanosecond, 1<<63 - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := tc.b
			checkBackoff(t, &b, tc.initial, tc.maxDelay, 100) // 100 doublings overflow if uncapped
			b.Reset()
			checkBackoff(t, &b, tc.initial, tc.maxDelay, 10)
		})
	}
}

func TestBackoffJitters(t *testing.T) {
	t.Parallel()
	b := feed.Backoff{Initial: time.Second, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[b.Next()] = true
	}
	// Without jitter all 50 are equal; with it, 50 equal draws out of half a
	// billion values are beyond chance.
	if len(seen) < 2 {
		t.Fatalf("50 delays took %d distinct values: no jitter", len(seen))
	}
}
