// Package stacktest gives integration tests the stack that `make test` started
// once for all test packages (devstack exec exports its stack.env, DEVSTACK_DIR
// among it, to `go test`).
package stacktest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/chatpoc/chat-poc/deploy/devstack"
)

// Connect returns a client of the shared test stack. It fails the test with
// the command to use when the tests were not started through `make test`.
func Connect(t testing.TB) *devstack.Client {
	t.Helper()
	dir := os.Getenv(devstack.EnvDir)
	if dir == "" {
		t.Fatalf("%s is not set: integration tests need the shared stack; run them with `make test` "+
			"(or `bin/devstack exec -profile geo -ports auto -- go test ./...`)", devstack.EnvDir)
	}
	c, err := devstack.Connect(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Env returns the value of key in the shared stack's stack.env, failing the
// test when the stack's profile does not provide it.
func Env(t testing.TB, c *devstack.Client, key string) string {
	t.Helper()
	v, err := c.Env().Get(key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// UniqueName returns prefix followed by a random suffix, to isolate a test's
// topics, databases, chat IDs and task queues from every other test's.
func UniqueName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}
