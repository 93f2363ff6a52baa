// Package chaostest runs chaos scenarios on the shared geo stack: a steady
// storm of writes from the load generator on the stack's external service,
// a disruption of the stack's own components, and the convergence checker
// on the stack's internal database and on the streams two internal UI
// clients (regions a and b) recorded. The scenarios are in e2e and in
// workers/writer/pgfailover.
package chaostest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.temporal.io/sdk/client"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/converge"
	"github.com/chatpoc/chat-poc/workflows"
)

// long selects the long chaos scenarios (make chaos); make test runs the
// short ones: the same disruptions, fewer times.
var long = flag.Bool("chaos.long", false, "run the long version of each chaos scenario (make chaos)")

// Times returns short under make test and long under make chaos
// (-chaos.long).
func Times(short, long_ int) int {
	if *long {
		return long_
	}
	return short
}

// Scenario is one chaos scenario on the shared geo stack.
type Scenario struct {
	t     *testing.T
	name  string
	Stack *devstack.Client
	ext   string
	token string
	pool  *pgxpool.Pool
	tc    client.Client

	recorders []*Recorder // Run's, one per region's internal instance
}

// New returns the scenario of test t (named after it) on the shared stack,
// which must be the geo profile.
func New(t *testing.T) *Scenario {
	t.Helper()
	stack := stacktest.Connect(t)
	if _, err := stack.Env().Get(devstack.EnvKafkaBBootstrap); err != nil {
		t.Fatalf("the chaos suite needs the geo profile: %v", err)
	}
	return &Scenario{
		t:     t,
		name:  strings.TrimPrefix(t.Name(), "TestChaos"),
		Stack: stack,
		ext:   stacktest.Env(t, stack, devstack.EnvExternalURL),
		token: stacktest.Env(t, stack, devstack.EnvExternalAdminToken),
		pool:  stacktest.Pool(t, stacktest.Env(t, stack, devstack.EnvPGInternalDSN), 4),
		tc:    stacktest.TemporalClient(t, stack),
	}
}

// stormRate is the writes per second of every scenario's storm.
const stormRate = 100

// Run runs the scenario: recorders on both regions' internal apps, the
// storm, disrupt (which must end by itself), a few more seconds of storm,
// then the convergence check. It prints the scenario's figures and fails
// the test on anything lost, stale, duplicated, regressed or lost in a
// stream.
func (c *Scenario) Run(disrupt func(ctx context.Context)) converge.Report {
	t := c.t
	recA := StartRecorder(t, "internal-a1", stacktest.Env(t, c.Stack, devstack.EnvInternalURL))
	recB := StartRecorder(t, "internal-b1", stacktest.Env(t, c.Stack, devstack.EnvInternalBURL))
	c.recorders = []*Recorder{recA, recB}
	log := &loadgen.MemoryRecorder{}
	ctx, stopStorm := context.WithCancel(context.Background())
	defer stopStorm()
	stormDone := make(chan error, 1)
	var stats loadgen.Stats
	go func() {
		var err error
		stats, err = loadgen.Run(ctx, loadgen.Config{BaseURL: c.ext, Rate: stormRate, Duration: 30 * time.Minute, Chats: 10}, log, nil)
		stormDone <- err
	}()
	stacktest.WaitFor(t, time.Minute, "the storm's first acknowledged writes", func() error {
		if n := log.Len(); n < 50 {
			return fmt.Errorf("%d so far", n)
		}
		return nil
	})

	began := time.Now()
	dctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	disrupt(dctx)
	cancel()
	disrupted := time.Since(began)

	// The storm goes on a little after the last disruption, then stops. A
	// stream that stopped flowing has no regressions either: every client
	// must also be shown a change made now.
	time.Sleep(3 * time.Second)
	c.CheckDelivery(DeliveryBound)
	stopStorm()
	if err := <-stormDone; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("load generator: %v", err)
	}
	stopped := time.Now()
	actx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, waited, err := converge.Await(actx, c.pool, log.Records(), nil, 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	final := AwaitStreams(t, log.Records(), LoadDB(t, c.pool, log.Records()), c.recorders, DeliveryBound)
	final.DBLatency = rep.DBLatency

	t.Logf("chaos %s: %d writes acknowledged (%d attempted, %d failed, %d throttled) in %s; disruption %s",
		c.name, stats.Acked, stats.Attempted, stats.Failed, stats.Throttled, stats.Elapsed.Round(time.Millisecond), disrupted.Round(time.Millisecond))
	t.Logf("chaos %s: checked %d chats, %d messages: %d lost, %d stale, %d duplicate rows, %d stream regressions, %d stream duplicates, %d lost in stream (%d frames on 2 clients); converged %s after the storm stopped",
		c.name, final.Chats, final.Messages, len(final.Lost), len(final.Stale), len(final.Duplicates),
		len(final.Regressions), len(final.StreamDuplicates), len(final.LostInStream), final.Frames, waited.Round(time.Millisecond))
	t.Logf("chaos %s: ack → row written: %s (the max is the worst gap a change saw)", c.name, rep.DBLatency.All)
	if !rep.Converged() || final.Failed() {
		var b bytes.Buffer
		_ = converge.WriteSummary(&b, final, 20)
		t.Errorf("chaos %s did not converge cleanly (the storm stopped %s after the disruption began):\n%s", c.name, stopped.Sub(began).Round(time.Millisecond), b.String())
		c.saveEvidence(log.Records())
	}
	return final
}

// saveEvidence writes the log of acknowledged writes and every recorded
// stream next to the services' logs, where a finding's frames can be read
// (and checked again with deploy/cmd/converge).
func (c *Scenario) saveEvidence(acked []loadgen.Record) {
	t := c.t
	dir := filepath.Join(c.Stack.Dir(), "logs")
	path := filepath.Join(dir, "chaos-"+c.name+"-log.jsonl")
	if err := loadgen.WriteLog(path, acked); err != nil {
		t.Logf("save the log of acknowledged writes: %v", err)
		return
	}
	t.Logf("the log of acknowledged writes: %s", path)
	for _, r := range c.recorders {
		var b []byte
		for _, f := range r.Stream().Frames {
			line, err := json.Marshal(f)
			if err != nil {
				t.Logf("save stream %s: %v", r.Name(), err)
				return
			}
			b = append(append(b, line...), '\n')
		}
		path := filepath.Join(dir, "chaos-"+c.name+"-"+r.Name()+".jsonl")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Logf("save stream %s: %v", r.Name(), err)
			continue
		}
		t.Logf("stream %s: %s", r.Name(), path)
	}
}

// AwaitStreams compares the recorders' streams with the log acked and the
// database's rows db every 250 ms until no stream lacks a final state it
// owes (converge.Report.LostInStream) or bound passes, then stops the
// recorders and returns the comparison of their whole streams. Frames still
// on their way when the storm stopped (a recorder reconnecting, reloading)
// can only complete a stream; regressions and duplicates cannot be mended
// by waiting.
func AwaitStreams(t testing.TB, acked []loadgen.Record, db converge.DBState, recs []*Recorder, bound time.Duration) converge.Report {
	t.Helper()
	final, took := WaitStreams(acked, db, recs, bound)
	if len(final.LostInStream) > 0 {
		for _, r := range recs {
			t.Logf("recorder %s: connection errors %v", r.Name(), r.Errors())
		}
	}
	t.Logf("streams complete %s after the database converged", took.Round(time.Millisecond))
	return final
}

// WaitStreams is AwaitStreams for a program that is not a test: it also
// returns how long it waited.
func WaitStreams(acked []loadgen.Record, db converge.DBState, recs []*Recorder, bound time.Duration) (converge.Report, time.Duration) {
	snapshot := func(take func(*Recorder) converge.Stream) []converge.Stream {
		streams := make([]converge.Stream, 0, len(recs))
		for _, r := range recs {
			streams = append(streams, take(r))
		}
		return streams
	}
	began := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for end := began.Add(bound); time.Now().Before(end); <-tick.C {
		if r := converge.Compare(acked, db, snapshot((*Recorder).Stream)); len(r.LostInStream) == 0 {
			break
		}
	}
	return converge.Compare(acked, db, snapshot((*Recorder).Stop)), time.Since(began)
}

// DeliveryBound is how long a chat created on external may take to reach
// every recorder after a disruption ended: the pipeline takes tens of
// milliseconds; a restarted cluster, MirrorMaker 2 catching up, or an
// instance restarted after a fatal Kafka error take seconds.
const DeliveryBound = 30 * time.Second

// CheckDelivery creates a chat on the stack's external service and fails
// the test unless every recorder of Run is told of it within bound.
func (c *Scenario) CheckDelivery(bound time.Duration) {
	t := c.t
	t.Helper()
	id := stacktest.CreateChat(t, c.ext)
	began := time.Now()
	stacktest.WaitFor(t, bound, "chat "+id+", created on external, to reach every client", func() error {
		var late []string
		for _, r := range c.recorders {
			if !r.SawChat(id) {
				late = append(late, r.Name())
			}
		}
		if len(late) > 0 {
			return fmt.Errorf("not yet told: %v", late)
		}
		return nil
	})
	t.Logf("delivery check: chat %s reached %d clients %s after it was created", id, len(c.recorders), time.Since(began).Round(time.Millisecond))
}

// LoadDB reads the rows of the chats recs name, failing t if it cannot.
func LoadDB(t testing.TB, pool *pgxpool.Pool, recs []loadgen.Record) converge.DBState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := converge.LoadDB(ctx, pool, converge.ChatIDs(recs))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// Pause waits a random time in [min, max), or until ctx ends.
func Pause(ctx context.Context, min, max time.Duration) {
	d := min + rand.N(max-min)
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Status queries the sync workflow's status.
func (c *Scenario) Status(ctx context.Context) (workflows.Status, error) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return stacktest.SyncStatus(qctx, c.tc)
}

// ActiveSyncWorker waits until the sync workflow's status names a worker
// that reported after since, and returns it.
func (c *Scenario) ActiveSyncWorker(since time.Time) devstack.Name {
	c.t.Helper()
	var active devstack.Name
	stacktest.WaitFor(c.t, 2*time.Minute, "a sync worker running the activity", func() error {
		st, err := c.Status(context.Background())
		if err != nil {
			return err
		}
		if st.State != workflows.StateRunning || st.Worker == "" || !st.AsOf.After(since) {
			return fmt.Errorf("status %+v", st)
		}
		active = devstack.Name(st.Worker)
		return nil
	})
	return active
}

// Kill kills n (SIGKILL to its process group); the launcher leaves it down
// until Start.
func (c *Scenario) Kill(ctx context.Context, n devstack.Name) {
	c.t.Helper()
	if err := c.Stack.Kill(ctx, n); err != nil {
		c.t.Fatalf("kill %s: %v", n, err)
	}
}

// Start starts n again, as its supervisor would.
func (c *Scenario) Start(ctx context.Context, n devstack.Name) {
	c.t.Helper()
	if err := c.Stack.StartComponent(ctx, n); err != nil {
		c.t.Fatalf("start %s: %v", n, err)
	}
}

// Pid returns the pid of running component n.
func (c *Scenario) Pid(ctx context.Context, n devstack.Name) int {
	c.t.Helper()
	pid := stacktest.Pid(ctx, c.t, c.Stack, n)
	if pid == 0 {
		c.t.Fatalf("%s is not running", n)
	}
	return pid
}

// SetFaults replaces the external service's injected faults (the JSON body
// of PUT /admin/faults).
func (c *Scenario) SetFaults(body string) {
	c.t.Helper()
	stacktest.SetFaults(c.t, c.ext, c.token, body)
}

// FlushRedis empties the stack's Redis, as a restart without persistence
// would.
func FlushRedis(t *testing.T, addr string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("flush redis: %v", err)
	}
}
