package devstack

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress writes the human-readable start/stop lines, one at a time.
type progress struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

// line prints "hh:mm:ss  component   status   detail".
func (p *progress) line(n Name, status, detail string) {
	p.printf("%s  %-11s %-16s %s\n", time.Now().Format("15:04:05"), n, status, detail)
}
