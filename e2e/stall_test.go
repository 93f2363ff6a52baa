package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/browsertest"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/e2e/chaostest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/kafkaclient"
)

// TestStalledInstanceIsShownAndRestartedByTheLauncher stalls the stack's
// region a internal instance for real: a rogue consumer joins its consumer
// group (an operator's mistake: two processes with one INTERNAL_GROUP) and
// takes some of its partitions, so records on them wait while the instance
// itself runs and answers. Its watchdog must turn /readyz red, its page
// must say "stalled", and past the liveness bound its /healthz fails and
// the launcher's liveness probe restarts it. The rogue gone, the restarted
// instance is ready and live again.
func TestStalledInstanceIsShownAndRestartedByTheLauncher(t *testing.T) {
	stack := stacktest.Connect(t)
	intURL := stacktest.Env(t, stack, devstack.EnvInternalURL)
	ctx := context.Background()
	pidBefore := stacktest.Pid(ctx, t, stack, devstack.InternalA1)

	// Records keep arriving on every partition.
	storm, stopStorm := context.WithCancel(ctx)
	defer stopStorm()
	go func() {
		_, _ = loadgen.Run(storm, loadgen.Config{BaseURL: stacktest.Env(t, stack, devstack.EnvExternalURL), Rate: 20, Duration: 10 * time.Minute, Chats: 10}, &loadgen.MemoryRecorder{}, nil)
	}()

	tab := browsertest.New(t).NewTab(t)
	tab.Navigate(intURL)
	tab.WaitVisible(tidAt("conn-status", "data-state", "open"))

	rogue := joinGroup(t, stacktest.Env(t, stack, devstack.EnvKafkaABootstrap), string(devstack.InternalA1), "")
	joined := time.Now()
	stacktest.WaitHTTP(t, intURL+"/readyz", http.StatusServiceUnavailable, "live-consumer stalled", 2*time.Minute)
	t.Logf("internal-a1 not ready %s after the rogue member joined its group", time.Since(joined).Round(100*time.Millisecond))
	tab.WaitVisible(tidAt("conn-status", "data-state", "stalled"))
	t.Logf("its page shows %q", tab.Text(tid("conn-status")))

	// Past the liveness bound (a minute), the launcher restarts it; the page
	// retries meanwhile.
	tab.AllowErrors("WebSocket connection", "ERR_CONNECTION_REFUSED")
	stacktest.WaitFor(t, 4*time.Minute, "the launcher to restart internal-a1", func() error {
		if pid := stacktest.Pid(ctx, t, stack, devstack.InternalA1); pid == pidBefore || pid == 0 {
			return fmt.Errorf("pid %d", pid)
		}
		return nil
	})
	t.Logf("internal-a1 restarted by the launcher %s after the rogue joined", time.Since(joined).Round(time.Second))
	rogue.leave()

	stacktest.WaitHTTP(t, intURL+"/readyz", http.StatusOK, "", 3*time.Minute)
	stacktest.WaitHTTP(t, intURL+"/healthz", http.StatusOK, "ok", time.Minute)
	tab.WaitVisible(tidAt("conn-status", "data-state", "open"))
}

// rogueMember is a consumer in someone else's group: it holds the
// partitions the group gives it, paused, and reads and commits nothing.
type rogueMember struct {
	c    *kafka.Consumer
	stop chan struct{}
	done chan struct{}
}

// joinGroup joins group on the change topics, as a static member with
// instanceID if it is not empty, and waits until it holds partitions.
func joinGroup(t *testing.T, bootstrap, group, instanceID string) *rogueMember {
	t.Helper()
	cm := &kafka.ConfigMap{
		"bootstrap.servers": bootstrap, "group.id": group, "client.id": "rogue-" + group,
		"enable.auto.commit": false, "auto.offset.reset": "latest", "session.timeout.ms": 10000,
		"log_level": 0, // the rogue's own fencing, once the instance it fenced is back, is expected
	}
	if instanceID != "" {
		_ = cm.SetKey("group.instance.id", instanceID)
	}
	c, err := kafka.NewConsumer(cm)
	if err != nil {
		t.Fatal(err)
	}
	topics := change.NewTopics(change.TopicMessages, change.TopicChats)
	if err := c.SubscribeTopics([]string{topics.Subscription()}, nil); err != nil {
		t.Fatal(err)
	}
	r := &rogueMember{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	held := make(chan error, 1)
	go func() {
		defer close(r.done)
		reported := false
		for {
			select {
			case <-r.stop:
				return
			default:
			}
			c.Poll(100) // serves the group's rebalances; nothing is fetched
			a, err := c.Assignment()
			if err != nil || len(a) == 0 {
				continue
			}
			// Hold whatever the group gives, without reading it: a
			// rebalance hands out partitions unpaused.
			_ = c.Pause(a)
			if !reported {
				held <- nil
				reported = true
			}
		}
	}()
	t.Cleanup(r.leave)
	select {
	case <-held:
	case <-time.After(2 * time.Minute):
		t.Fatal(errors.New("the rogue member got no partitions within 2 minutes"))
	}
	return r
}

// leave stops the rogue member and closes it (it leaves the group).
func (r *rogueMember) leave() {
	select {
	case <-r.stop:
		return
	default:
	}
	close(r.stop)
	<-r.done
	kafkaclient.CloseConsumer(r.c, 10*time.Second)
}

// TestFencedInstanceExitsAndIsRestarted fences the stack's region a
// internal instance for real: a consumer joins its group with its
// group.instance.id, as the instance's own earlier join does in the
// self-fencing race after a Kafka outage (issue 15). The instance gets
// FENCED_INSTANCE_ID, a fatal error; it must log it and exit (its close
// bounded: the client library's Close never returns then), be restarted
// by the launcher, and deliver changes again. Before the fix it stayed
// up, with readiness green, delivering nothing.
func TestFencedInstanceExitsAndIsRestarted(t *testing.T) {
	stack := stacktest.Connect(t)
	intURL := stacktest.Env(t, stack, devstack.EnvInternalURL)
	ctx := context.Background()
	pidBefore := stacktest.Pid(ctx, t, stack, devstack.InternalA1)

	rogue := joinGroup(t, stacktest.Env(t, stack, devstack.EnvKafkaABootstrap), string(devstack.InternalA1), string(devstack.InternalA1))
	fenced := time.Now()
	rogue.leave()
	stacktest.WaitFor(t, 2*time.Minute, "the launcher to restart the fenced internal-a1", func() error {
		if pid := stacktest.Pid(ctx, t, stack, devstack.InternalA1); pid == pidBefore || pid == 0 {
			return fmt.Errorf("pid %d", pid)
		}
		return nil
	})
	t.Logf("internal-a1 exited and was restarted %s after it was fenced", time.Since(fenced).Round(100*time.Millisecond))
	logs, err := os.ReadFile(filepath.Join(stack.Dir(), "logs", string(devstack.InternalA1)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), "Kafka consumer failed fatally") || !strings.Contains(string(logs), "fenced") {
		t.Errorf("internal-a1's log does not say it was fenced and failed fatally")
	}

	stacktest.WaitHTTP(t, intURL+"/readyz", http.StatusOK, "", 3*time.Minute)
	rec := chaostest.StartRecorder(t, "internal-a1", intURL)
	chat := stacktest.CreateChat(t, stacktest.Env(t, stack, devstack.EnvExternalURL))
	stacktest.WaitFor(t, chaostest.DeliveryBound, "a new chat to reach a client of the restarted internal-a1", func() error {
		if !rec.SawChat(chat) {
			return errors.New("not yet")
		}
		return nil
	})
}
