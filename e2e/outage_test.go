package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/e2e/chaostest"
)

// minOutage is the shortest Kafka-a outage of the loop: longer than the
// consumers' group session timeouts (the internal app's 10 s, the writers'
// 6 s), so that every consumer of cluster a loses its session while the
// cluster is down and joins its group again "blind" when it is back — the
// rejoin that can fence the internal app's static member (issue 15). A
// quick stop/start does not get there.
const minOutage = 12 * time.Second

// regionAServices are the services whose Kafka is cluster a.
var regionAServices = []devstack.Name{devstack.InternalA1, devstack.WriterA1, devstack.WriterA2, devstack.SyncA1, devstack.SyncA2}

// stopWithinGrace stops services gracefully, all at once, while their Kafka
// cluster is down: each must exit by itself within the launcher's grace
// period (the launcher kills it after that, and Stop says so). It returns
// the services stopped.
func stopWithinGrace(ctx context.Context, t *testing.T, c *chaostest.Scenario, services []devstack.Name) []devstack.Name {
	t.Helper()
	errs := make(chan error, len(services))
	for _, n := range services {
		go func() {
			began := time.Now()
			err := c.Stack.Stop(ctx, n)
			if err == nil {
				t.Logf("%s stopped in %s with its Kafka cluster down", n, time.Since(began).Round(time.Millisecond))
			}
			errs <- err
		}()
	}
	for range services {
		if err := <-errs; err != nil {
			t.Errorf("graceful stop with Kafka down: %v", err)
		}
	}
	return services
}

// startAll starts services at once, as their supervisor would, and waits
// until each is ready.
func startAll(ctx context.Context, t *testing.T, c *chaostest.Scenario, services []devstack.Name) {
	t.Helper()
	errs := make(chan error, len(services))
	for _, n := range services {
		go func() { errs <- c.Stack.StartComponent(ctx, n) }()
	}
	for range services {
		if err := <-errs; err != nil {
			t.Fatalf("start again: %v", err)
		}
	}
}

// TestChaosKafkaAOutagesLiveUpdatesKeepFlowing stops Kafka cluster a
// again and again under a storm, each time long enough for the sync to fail
// over to cluster b and for every consumer of a to lose its group session,
// then starts it again; during the first outage region a's services are
// stopped (each must exit within the launcher's grace period with its
// Kafka down) and started again. After each outage a chat created on external must
// reach a WebSocket client of each region's internal instance within
// chaostest.DeliveryBound: a live path that wedged after an outage (issue
// 15: the internal app's consumer failed fatally and hung in its close,
// with readiness green), or skipped the records written while it rejoined
// (auto.offset.reset=latest on partitions its group had never read from:
// the sync fails back to cluster a as soon as it is up, and its first chat
// there never reached internal-a1), fails here, with goroutine dumps of the
// services.
func TestChaosKafkaAOutagesLiveUpdatesKeepFlowing(t *testing.T) {
	c := chaostest.New(t)
	bootstrap := stacktest.Env(t, c.Stack, devstack.EnvKafkaABootstrap)
	c.Run(func(ctx context.Context) {
		for i := 0; i < chaostest.Times(3, 10); i++ {
			if err := c.Stack.Stop(ctx, devstack.KafkaA); err != nil {
				t.Fatalf("stop kafka-a: %v", err)
			}
			stopped := time.Now()
			stacktest.WaitFor(t, 2*time.Minute, "the sync to publish on cluster b", func() error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				if st.Cluster != "b" || !st.AsOf.After(stopped) {
					return fmt.Errorf("status: cluster %q as of %s", st.Cluster, st.AsOf.Format(time.TimeOnly))
				}
				return nil
			})
			failedOver := time.Since(stopped)
			var stoppedServices []devstack.Name
			if i == 0 {
				stoppedServices = stopWithinGrace(ctx, t, c, regionAServices)
			}
			chaostest.Pause(ctx, max(0, minOutage-time.Since(stopped)), max(0, minOutage-time.Since(stopped))+5*time.Second)
			c.Start(ctx, devstack.KafkaA)
			t.Logf("outage %d: kafka-a down for %s (the sync on cluster b after %s)", i+1,
				time.Since(stopped).Round(time.Millisecond), failedOver.Round(time.Millisecond))
			startAll(ctx, t, c, stoppedServices)
			stacktest.WaitTransactionsSettled(t, c.Stack, "a", bootstrap, []string{"chat-messages", "chats"}, 3*time.Minute)
			c.CheckDelivery(chaostest.DeliveryBound)
		}
	})
}
