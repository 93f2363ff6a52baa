package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"syscall"
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

// times returns short under make test and long under make chaos.
func times(short, long_ int) int {
	if *long {
		return long_
	}
	return short
}

// chaos is one chaos scenario on the shared geo stack: a steady storm of
// writes from the load generator on the stack's external service, a
// disruption of the stack's own components, and the convergence checker
// on the stack's internal database and on the streams two internal UI
// clients (regions a and b) recorded.
type chaos struct {
	t     *testing.T
	name  string
	stack *devstack.Client
	ext   string
	token string
	pool  *pgxpool.Pool
	tc    client.Client
}

func newChaos(t *testing.T) *chaos {
	t.Helper()
	stack := stacktest.Connect(t)
	if _, err := stack.Env().Get(devstack.EnvKafkaBBootstrap); err != nil {
		t.Fatalf("the chaos suite needs the geo profile: %v", err)
	}
	return &chaos{
		t:     t,
		name:  strings.TrimPrefix(t.Name(), "TestChaos"),
		stack: stack,
		ext:   stacktest.Env(t, stack, devstack.EnvExternalURL),
		token: stacktest.Env(t, stack, devstack.EnvExternalAdminToken),
		pool:  stacktest.Pool(t, stacktest.Env(t, stack, devstack.EnvPGInternalDSN), 4),
		tc:    stacktest.TemporalClient(t, stack),
	}
}

// stormRate is the writes per second of every scenario's storm.
const stormRate = 100

// run runs the scenario: recorders on both regions' internal apps, the
// storm, disrupt (which must end by itself), a few more seconds of storm,
// then the convergence check. It prints the scenario's figures and fails
// the test on anything lost, stale, duplicated or regressed.
func (c *chaos) run(disrupt func(ctx context.Context)) converge.Report {
	t := c.t
	recA := record("internal-a1", stacktest.Env(t, c.stack, devstack.EnvInternalURL))
	recB := record("internal-b1", stacktest.Env(t, c.stack, devstack.EnvInternalBURL))
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

	// The storm goes on a little after the last disruption, then stops.
	time.Sleep(3 * time.Second)
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
	// The streams are checked once the database converged: every change
	// has then reached Kafka, and so the live consumers.
	time.Sleep(time.Second)
	final := converge.Compare(log.Records(), mustLoad(t, c.pool, log.Records()), []converge.Stream{recA.stop(), recB.stop()})
	final.DBLatency = rep.DBLatency

	t.Logf("chaos %s: %d writes acknowledged (%d attempted, %d failed, %d throttled) in %s; disruption %s",
		c.name, stats.Acked, stats.Attempted, stats.Failed, stats.Throttled, stats.Elapsed.Round(time.Millisecond), disrupted.Round(time.Millisecond))
	t.Logf("chaos %s: checked %d chats, %d messages: %d lost, %d stale, %d duplicate rows, %d stream regressions, %d stream duplicates (%d frames on 2 clients); converged %s after the storm stopped",
		c.name, final.Chats, final.Messages, len(final.Lost), len(final.Stale), len(final.Duplicates),
		len(final.Regressions), len(final.StreamDuplicates), final.Frames, waited.Round(time.Millisecond))
	t.Logf("chaos %s: ack → row written: %s (the max is the worst gap a change saw)", c.name, rep.DBLatency.All)
	if !rep.Converged() || final.Failed() {
		var b bytes.Buffer
		_ = converge.WriteSummary(&b, final, 20)
		t.Errorf("chaos %s did not converge cleanly (%s after the storm):\n%s", c.name, stopped.Sub(began).Round(time.Millisecond), b.String())
	}
	return final
}

func mustLoad(t *testing.T, pool *pgxpool.Pool, recs []loadgen.Record) converge.DBState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := converge.LoadDB(ctx, pool, converge.ChatIDs(recs))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// pause waits a random time in [min, max), or until ctx ends.
func pause(ctx context.Context, min, max time.Duration) {
	d := min + rand.N(max-min)
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// status queries the sync workflow's status.
func (c *chaos) status(ctx context.Context) (workflows.Status, error) {
	var st workflows.Status
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := c.tc.QueryWorkflow(qctx, workflows.WorkflowID, "", workflows.QueryStatus)
	if err == nil {
		err = v.Get(&st)
	}
	return st, err
}

// activeSyncWorker waits until the sync workflow's status names a worker
// that reported after since, and returns it.
func (c *chaos) activeSyncWorker(since time.Time) devstack.Name {
	c.t.Helper()
	var active devstack.Name
	stacktest.WaitFor(c.t, 2*time.Minute, "a sync worker running the activity", func() error {
		st, err := c.status(context.Background())
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

// kill kills n (SIGKILL to its process group); the launcher leaves it down
// until start.
func (c *chaos) kill(ctx context.Context, n devstack.Name) {
	c.t.Helper()
	if err := c.stack.Kill(ctx, n); err != nil {
		c.t.Fatalf("kill %s: %v", n, err)
	}
}

func (c *chaos) start(ctx context.Context, n devstack.Name) {
	c.t.Helper()
	if err := c.stack.StartComponent(ctx, n); err != nil {
		c.t.Fatalf("start %s: %v", n, err)
	}
}

func (c *chaos) pid(ctx context.Context, n devstack.Name) int {
	c.t.Helper()
	sts, err := c.stack.Status(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, s := range sts {
		if s.Name == n && s.Running {
			return s.Pid
		}
	}
	c.t.Fatalf("%s is not running", n)
	return 0
}

// setFaults replaces the external service's injected faults.
func (c *chaos) setFaults(body string) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPut, c.ext+"/admin/faults", strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		c.t.Fatalf("set faults: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		c.t.Fatalf("set faults %s: %s", body, resp.Status)
	}
}

// TestChaosKillActiveSyncWorker kills -9 whichever sync worker runs the
// activity (three workers, two regions), at random moments; the launcher
// restarts each. Each kill waits for the activity to run again first, so
// every kill hits the active worker.
func TestChaosKillActiveSyncWorker(t *testing.T) {
	c := newChaos(t)
	kills := times(3, 20)
	var gaps []time.Duration
	c.run(func(ctx context.Context) {
		since := time.Time{}
		for i := 0; i < kills; i++ {
			active := c.activeSyncWorker(since)
			pause(ctx, 500*time.Millisecond, 3*time.Second)
			c.kill(ctx, active)
			killed := time.Now()
			next := c.activeSyncWorker(killed)
			gap := time.Since(killed)
			gaps = append(gaps, gap)
			c.start(ctx, active) // as its supervisor would
			t.Logf("kill %d: %s killed; %s ran the activity %s later", i+1, active, next, gap.Round(time.Millisecond))
			since = killed
		}
	})
	slices.Sort(gaps)
	if len(gaps) > 0 {
		// Coarse: the activity reports every few seconds; the changes' own
		// worst gap is the "ack → row written" max above.
		t.Logf("takeover seen in the status (kill → the next worker's first report) over %d kills: median %s, max %s",
			len(gaps), gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond))
	}
}

// TestChaosFrozenSyncWorker freezes (SIGSTOP) the active sync worker until
// another one has taken the activity over, then thaws it (SIGCONT): the
// zombie's late publishes must be fenced, and nothing lost or doubled.
func TestChaosFrozenSyncWorker(t *testing.T) {
	c := newChaos(t)
	c.run(func(ctx context.Context) {
		for i := 0; i < times(1, 5); i++ {
			active := c.activeSyncWorker(time.Time{})
			pid := c.pid(ctx, active)
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			thaw := func() { _ = syscall.Kill(pid, syscall.SIGCONT) }
			t.Cleanup(thaw) // never leave the stack's worker frozen
			frozen := time.Now()
			next := c.activeSyncWorker(frozen)
			if next == active {
				t.Errorf("%s is frozen, yet the status names it as reporting", active)
			}
			pause(ctx, time.Second, 3*time.Second)
			thaw()
			t.Logf("freeze %d: %s frozen; %s took over %s later; thawed", i+1, active, next, time.Since(frozen).Round(time.Millisecond))
			pause(ctx, 2*time.Second, 4*time.Second)
		}
	})
}

// TestChaosKillWritersAndInternal kills -9 random writers and internal app
// instances, repeatedly; the launcher restarts each.
func TestChaosKillWritersAndInternal(t *testing.T) {
	c := newChaos(t)
	victims := []devstack.Name{devstack.WriterA1, devstack.WriterA2, devstack.WriterB1, devstack.InternalA1, devstack.InternalB1}
	c.run(func(ctx context.Context) {
		for i := 0; i < times(4, 20); i++ {
			v := victims[rand.N(len(victims))]
			c.kill(ctx, v)
			pause(ctx, 200*time.Millisecond, 2*time.Second)
			c.start(ctx, v) // as its supervisor would
			t.Logf("kill %d: %s killed and started again", i+1, v)
			pause(ctx, time.Second, 3*time.Second)
		}
	})
}

// TestChaosKafkaAOutage stops Kafka cluster a mid-storm (the sync fails over
// to b, region a's writers and internal instance wait), restarts it, then
// kills MirrorMaker 2 and starts it again.
func TestChaosKafkaAOutage(t *testing.T) {
	c := newChaos(t)
	c.run(func(ctx context.Context) {
		for i := 0; i < times(1, 3); i++ {
			if err := c.stack.Stop(ctx, devstack.KafkaA); err != nil {
				t.Fatalf("stop kafka-a: %v", err)
			}
			stopped := time.Now()
			pause(ctx, 5*time.Second, 10*time.Second)
			c.start(ctx, devstack.KafkaA)
			t.Logf("outage %d: kafka-a down for %s", i+1, time.Since(stopped).Round(time.Millisecond))
			stacktest.WaitTransactionsSettled(t, c.stack, "a", stacktest.Env(t, c.stack, devstack.EnvKafkaABootstrap),
				[]string{"chat-messages", "chats"}, 3*time.Minute)
		}
		c.kill(ctx, devstack.MirrorMaker)
		pause(ctx, 2*time.Second, 5*time.Second)
		c.start(ctx, devstack.MirrorMaker)
	})
}

// TestChaosRedisFlushedAndRestarted empties Redis mid-storm, then restarts
// it (no persistence: it comes back empty); the internal apps serve from
// memory meanwhile and never push an older version after a newer one.
func TestChaosRedisFlushedAndRestarted(t *testing.T) {
	c := newChaos(t)
	addr := stacktest.Env(t, c.stack, devstack.EnvRedisAddr)
	c.run(func(ctx context.Context) {
		for i := 0; i < times(1, 3); i++ {
			flushRedis(t, addr)
			pause(ctx, 2*time.Second, 4*time.Second)
			if err := c.stack.Restart(ctx, devstack.Redis); err != nil {
				t.Fatalf("restart redis: %v", err)
			}
			pause(ctx, 2*time.Second, 4*time.Second)
		}
	})
}

// TestChaosTemporalRestarted restarts the Temporal server mid-storm: the
// workflow and its checkpoint survive (the server persists them), the
// workers reconnect and the sync resumes from the checkpoint.
func TestChaosTemporalRestarted(t *testing.T) {
	c := newChaos(t)
	c.run(func(ctx context.Context) {
		for i := 0; i < times(1, 3); i++ {
			began := time.Now()
			if err := c.stack.Restart(ctx, devstack.Temporal); err != nil {
				t.Fatalf("restart temporal: %v", err)
			}
			next := c.activeSyncWorker(began)
			t.Logf("restart %d: %s runs the activity %s after the restart began", i+1, next, time.Since(began).Round(time.Millisecond))
			pause(ctx, 2*time.Second, 4*time.Second)
		}
	})
}

// TestChaosExternalMisbehaving makes the external service slow, failing,
// throttling and dropping connections mid-storm (the load generator's
// writes see the same faults: a dropped answer is a write external made
// but never acknowledged, which the checker lists as newer than the log),
// then heals it.
func TestChaosExternalMisbehaving(t *testing.T) {
	c := newChaos(t)
	t.Cleanup(func() { c.setFaults(`{}`) })
	c.run(func(ctx context.Context) {
		for _, f := range []string{
			`{"latency": "200ms", "latencyJitter": "300ms"}`,
			`{"errorRate": 0.3}`,
			`{"throttleRate": 0.3, "retryAfter": "1s"}`,
			`{"dropRate": 0.2}`,
			`{"latency": "10ms", "latencyJitter": "30ms", "errorRate": 0.1, "throttleRate": 0.05, "retryAfter": "1s", "dropRate": 0.05}`,
		} {
			c.setFaults(f)
			pause(ctx, time.Duration(times(3, 20))*time.Second, time.Duration(times(4, 30))*time.Second)
		}
		c.setFaults(`{}`)
	})
}

// flushRedis empties the stack's Redis, as a restart without persistence
// would.
func flushRedis(t *testing.T, addr string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("flush redis: %v", err)
	}
}
