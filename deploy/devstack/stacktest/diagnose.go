package stacktest

import (
	"context"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/deploy/devstack"
)

// DumpServices asks the launcher for a goroutine dump of every running
// service of the stack (written next to their logs) and logs where the
// dumps and logs are: what a stall or a hang needs to be explained after
// the fact. Connect arranges it for every test that fails.
func DumpServices(t testing.TB, c *devstack.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	paths, err := c.DumpGoroutines(ctx)
	if err != nil {
		t.Logf("goroutine dumps of the stack's services: %v", err)
	}
	for _, p := range paths {
		t.Logf("goroutine dump: %s", p)
	}
	t.Logf("the services' logs: %s/logs/", c.Dir())
}

// DumpServicesOnFailure calls DumpServices when t has failed by the time it
// ends.
func DumpServicesOnFailure(t testing.TB, c *devstack.Client) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			DumpServices(t, c)
		}
	})
}
