package e2e

import (
	"context"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/e2e/chaostest"
)

// TestChaosKillActiveSyncWorker kills -9 whichever sync worker runs the
// activity (three workers, two regions), at random moments; the launcher
// restarts each. Each kill waits for the activity to run again first, so
// every kill hits the active worker.
func TestChaosKillActiveSyncWorker(t *testing.T) {
	c := chaostest.New(t)
	kills := chaostest.Times(3, 20)
	var gaps []time.Duration
	c.Run(func(ctx context.Context) {
		since := time.Time{}
		for i := 0; i < kills; i++ {
			active := c.ActiveSyncWorker(since)
			chaostest.Pause(ctx, 500*time.Millisecond, 3*time.Second)
			c.Kill(ctx, active)
			killed := time.Now()
			next := c.ActiveSyncWorker(killed)
			gap := time.Since(killed)
			gaps = append(gaps, gap)
			c.Start(ctx, active) // as its supervisor would
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
	c := chaostest.New(t)
	c.Run(func(ctx context.Context) {
		for i := 0; i < chaostest.Times(1, 5); i++ {
			active := c.ActiveSyncWorker(time.Time{})
			pid := c.Pid(ctx, active)
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			thaw := func() { _ = syscall.Kill(pid, syscall.SIGCONT) }
			t.Cleanup(thaw) // never leave the stack's worker frozen
			frozen := time.Now()
			next := c.ActiveSyncWorker(frozen)
			if next == active {
				t.Errorf("%s is frozen, yet the status names it as reporting", active)
			}
			chaostest.Pause(ctx, time.Second, 3*time.Second)
			if now := c.Pid(ctx, active); now != pid {
				// The launcher's liveness probe (a frozen process cannot
				// answer /healthz) terminated it: no zombie to thaw.
				t.Fatalf("%s (pid %d) was replaced by pid %d while frozen for %s: the zombie path was not exercised",
					active, pid, now, time.Since(frozen).Round(time.Millisecond))
			}
			thaw()
			t.Logf("freeze %d: %s frozen; %s took over %s later; thawed", i+1, active, next, time.Since(frozen).Round(time.Millisecond))
			chaostest.Pause(ctx, 2*time.Second, 4*time.Second)
		}
	})
}

// TestChaosKillWritersAndInternal kills -9 random writers and internal app
// instances, repeatedly; the launcher restarts each.
func TestChaosKillWritersAndInternal(t *testing.T) {
	c := chaostest.New(t)
	victims := []devstack.Name{devstack.WriterA1, devstack.WriterA2, devstack.WriterB1, devstack.InternalA1, devstack.InternalB1}
	c.Run(func(ctx context.Context) {
		for i := 0; i < chaostest.Times(4, 20); i++ {
			v := victims[rand.N(len(victims))]
			c.Kill(ctx, v)
			chaostest.Pause(ctx, 200*time.Millisecond, 2*time.Second)
			c.Start(ctx, v) // as its supervisor would
			t.Logf("kill %d: %s killed and started again", i+1, v)
			chaostest.Pause(ctx, time.Second, 3*time.Second)
		}
	})
}

// TestChaosKafkaAOutage stops Kafka cluster a mid-storm (the sync fails over
// to b, region a's writers and internal instance wait), restarts it, then
// kills MirrorMaker 2 and starts it again.
func TestChaosKafkaAOutage(t *testing.T) {
	c := chaostest.New(t)
	c.Run(func(ctx context.Context) {
		for i := 0; i < chaostest.Times(1, 3); i++ {
			if err := c.Stack.Stop(ctx, devstack.KafkaA); err != nil {
				t.Fatalf("stop kafka-a: %v", err)
			}
			stopped := time.Now()
			chaostest.Pause(ctx, 5*time.Second, 10*time.Second)
			c.Start(ctx, devstack.KafkaA)
			t.Logf("outage %d: kafka-a down for %s", i+1, time.Since(stopped).Round(time.Millisecond))
			stacktest.WaitTransactionsSettled(t, c.Stack, "a", stacktest.Env(t, c.Stack, devstack.EnvKafkaABootstrap),
				[]string{"chat-messages", "chats"}, 3*time.Minute)
		}
		c.Kill(ctx, devstack.MirrorMaker)
		chaostest.Pause(ctx, 2*time.Second, 5*time.Second)
		c.Start(ctx, devstack.MirrorMaker)
	})
}

// TestChaosRedisFlushedAndRestarted empties Redis mid-storm, then restarts
// it (no persistence: it comes back empty); the internal apps serve from
// memory meanwhile and never push an older version after a newer one.
func TestChaosRedisFlushedAndRestarted(t *testing.T) {
	c := chaostest.New(t)
	addr := stacktest.Env(t, c.Stack, devstack.EnvRedisAddr)
	c.Run(func(ctx context.Context) {
		for i := 0; i < chaostest.Times(1, 3); i++ {
			chaostest.FlushRedis(t, addr)
			chaostest.Pause(ctx, 2*time.Second, 4*time.Second)
			if err := c.Stack.Restart(ctx, devstack.Redis); err != nil {
				t.Fatalf("restart redis: %v", err)
			}
			chaostest.Pause(ctx, 2*time.Second, 4*time.Second)
		}
	})
}

// TestChaosTemporalRestarted restarts the Temporal server mid-storm: the
// workflow and its checkpoint survive (the server persists them), the
// workers reconnect and the sync resumes from the checkpoint.
func TestChaosTemporalRestarted(t *testing.T) {
	c := chaostest.New(t)
	c.Run(func(ctx context.Context) {
		for i := 0; i < chaostest.Times(1, 3); i++ {
			began := time.Now()
			if err := c.Stack.Restart(ctx, devstack.Temporal); err != nil {
				t.Fatalf("restart temporal: %v", err)
			}
			next := c.ActiveSyncWorker(began)
			t.Logf("restart %d: %s runs the activity %s after the restart began", i+1, next, time.Since(began).Round(time.Millisecond))
			chaostest.Pause(ctx, 2*time.Second, 4*time.Second)
		}
	})
}

// TestChaosExternalMisbehaving makes the external service slow, failing,
// throttling and dropping connections mid-storm (the load generator's
// writes see the same faults: a dropped answer is a write external made
// but never acknowledged, which the checker lists as newer than the log),
// then heals it.
func TestChaosExternalMisbehaving(t *testing.T) {
	c := chaostest.New(t)
	t.Cleanup(func() { c.SetFaults(`{}`) })
	c.Run(func(ctx context.Context) {
		for _, f := range []string{
			`{"latency": "200ms", "latencyJitter": "300ms"}`,
			`{"errorRate": 0.3}`,
			`{"throttleRate": 0.3, "retryAfter": "1s"}`,
			`{"dropRate": 0.2}`,
			`{"latency": "10ms", "latencyJitter": "30ms", "errorRate": 0.1, "throttleRate": 0.05, "retryAfter": "1s", "dropRate": 0.05}`,
		} {
			c.SetFaults(f)
			chaostest.Pause(ctx, time.Duration(chaostest.Times(3, 20))*time.Second, time.Duration(chaostest.Times(4, 30))*time.Second)
		}
		c.SetFaults(`{}`)
	})
}
