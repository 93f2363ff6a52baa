package feed

import (
	"math/rand/v2"
	"time"
)

// Defaults of a Backoff's zero fields.
const (
	defaultBackoffInitial = 100 * time.Millisecond
	defaultBackoffMax     = 10 * time.Second
)

// Backoff spaces out the retries of a failing operation: capped exponential
// backoff with equal jitter. The n-th delay after a Reset is drawn uniformly
// from [c/2, c], where c = min(Initial·2ⁿ⁻¹, Max): the jitter spreads the
// retries of many workers apart, and the floor keeps a retry from coming
// right back. A zero Initial means 100 ms, a zero Max 10 s; a Max below
// Initial is raised to it. A Backoff is not safe for concurrent use.
type Backoff struct {
	Initial, Max time.Duration

	ceiling time.Duration // of the last delay; 0 after a Reset
}

// Next returns the delay before the next retry and doubles the range of the
// one after, up to Max.
func (b *Backoff) Next() time.Duration {
	initial, maxDelay := b.Initial, b.Max
	if initial <= 0 {
		initial = defaultBackoffInitial
	}
	if maxDelay <= 0 {
		maxDelay = defaultBackoffMax
	}
	maxDelay = max(maxDelay, initial)
	switch {
	case b.ceiling <= 0:
		b.ceiling = initial
	case b.ceiling > maxDelay/2:
		b.ceiling = maxDelay
	default:
		b.ceiling *= 2
	}
	b.ceiling = min(b.ceiling, maxDelay)
	half := b.ceiling / 2
	return b.ceiling - half + rand.N(half+1)
}

// Reset starts the delays over from Initial, after a success.
func (b *Backoff) Reset() { b.ceiling = 0 }
