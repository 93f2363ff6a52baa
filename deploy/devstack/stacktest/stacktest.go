// Package stacktest gives integration tests the stack that `make test` started
// once for all test packages (devstack exec exports its stack.env, DEVSTACK_DIR
// among it, to `go test`).
package stacktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/chatpoc/chat-poc/deploy/devstack"
)

// Connect returns a client of the shared test stack. It fails the test with
// the command to use when the tests were not started through `make test`.
// If the test fails, the stack's services' goroutines are dumped when it
// ends (DumpServices).
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
	// A test that fails on the shared stack leaves the goroutines of every
	// service next to its log: what a stalled or wedged process was doing.
	DumpServicesOnFailure(t, c)
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

// FreshDatabase creates an empty database on the shared stack's Postgres
// primary, owned by the application role, drops it when the test ends, and
// returns its DSN. Tests isolate themselves by database, not by server.
func FreshDatabase(t testing.TB, c *devstack.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, Env(t, c, devstack.EnvPGAdminDSN))
	if err != nil {
		t.Fatalf("connect to Postgres as admin: %v", err)
	}
	defer admin.Close(context.Background())
	name := strings.ReplaceAll(UniqueName("test"), "-", "_")
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident+" OWNER "+pgx.Identifier{devstack.PGAppUser}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin, err := pgx.Connect(ctx, Env(t, c, devstack.EnvPGAdminDSN))
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(Env(t, c, devstack.EnvPGPrimaryDSN))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// WaitFor polls check every 100 ms until it returns nil, and fails the test
// with check's last error, naming what was awaited, once deadline has passed.
// It is how tests wait on a condition instead of sleeping.
func WaitFor(t testing.TB, deadline time.Duration, what string, check func() error) {
	t.Helper()
	var err error
	for end := time.Now().Add(deadline); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if err = check(); err == nil {
			return
		}
	}
	t.Fatalf("waited %s for %s: %v", deadline, what, err)
}

// FreshNamespace registers a new Temporal namespace on the shared stack's
// server, waits until the server serves it, and returns a client of it that
// is closed when the test ends. Tests isolate their workflows by namespace
// (the sync workflow's ID is fixed), not by server.
func FreshNamespace(t testing.TB, c *devstack.Client) (string, client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := Env(t, c, devstack.EnvTemporalAddress)
	nc, err := client.NewNamespaceClient(client.Options{HostPort: addr, Logger: quietLogger{}})
	if err != nil {
		t.Fatalf("connect to Temporal at %s: %v", addr, err)
	}
	defer nc.Close()
	ns := UniqueName("test")
	if err := nc.Register(ctx, &workflowservice.RegisterNamespaceRequest{
		Namespace:                        ns,
		WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour),
	}); err != nil {
		t.Fatalf("register namespace %s: %v", ns, err)
	}
	tc, err := client.Dial(client.Options{HostPort: addr, Namespace: ns, Logger: quietLogger{}})
	if err != nil {
		t.Fatalf("connect to namespace %s: %v", ns, err)
	}
	t.Cleanup(tc.Close)
	// The frontend learns of new namespaces on its next registry refresh.
	WaitFor(t, time.Minute, "namespace "+ns+" to be served", func() error {
		_, err := tc.DescribeWorkflowExecution(ctx, "no-such-workflow", "")
		var nsNotFound *serviceerror.NamespaceNotFound
		if errors.As(err, &nsNotFound) {
			return err
		}
		return nil
	})
	return ns, tc
}

// TemporalClient returns a client of the shared stack's Temporal namespace
// (where the stack's own sync workflow runs), closed when the test ends.
func TemporalClient(t testing.TB, c *devstack.Client) client.Client {
	t.Helper()
	tc, err := client.Dial(client.Options{
		HostPort:  Env(t, c, devstack.EnvTemporalAddress),
		Namespace: Env(t, c, devstack.EnvTemporalNamespace),
		Logger:    quietLogger{},
	})
	if err != nil {
		t.Fatalf("connect to Temporal: %v", err)
	}
	t.Cleanup(tc.Close)
	return tc
}

// quietLogger drops the SDK's logs: tests report what matters themselves.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

// Pool opens a pgx pool of at most maxConns connections on dsn (a database
// of FreshDatabase, say), closed when the test ends.
func Pool(t testing.TB, dsn string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	cfg.MaxConns = maxConns
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// CreateChat creates a chat through the external service's API at baseURL
// and returns its ID.
func CreateChat(t testing.TB, baseURL string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Post(baseURL+"/chats", "application/json", nil)
	if err != nil {
		t.Fatalf("create a chat on external: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("create a chat on external: %s", resp.Status)
	}
	var v struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.ID == "" {
		t.Fatalf("create a chat on external: id %q, %v", v.ID, err)
	}
	return v.ID
}

// WaitHTTP waits up to deadline until GET url answers code with a body
// containing want.
func WaitHTTP(t testing.TB, url string, code int, want string, deadline time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	WaitFor(t, deadline, fmt.Sprintf("%s to answer %d %q", url, code, want), func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != code || !strings.Contains(string(b), want) {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		return nil
	})
}

// Pid returns the pid of the stack's component n, 0 while it is not
// running.
func Pid(ctx context.Context, t testing.TB, c *devstack.Client, n devstack.Name) int {
	t.Helper()
	sts, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Name == n && s.Running {
			return s.Pid
		}
	}
	return 0
}
