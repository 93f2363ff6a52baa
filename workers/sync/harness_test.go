package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/chatpoc/chat-poc/apps/external/api"
	"github.com/chatpoc/chat-poc/apps/external/externaltest"
	"github.com/chatpoc/chat-poc/apps/external/store"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/workflows"
)

// workerBin is the sync worker binary the integration tests run as separate
// processes (to kill -9 and SIGSTOP them); TestMain builds it once.
var workerBin string

func TestMain(m *testing.M) { stacktest.MainWithCommand(m, ".", "sync", &workerBin) }

const adminToken = "test-admin-token"

// syncEnv is one test's sync deployment on the shared stack: its own
// Temporal namespace (so its own singleton), its own external service over a
// fresh database, its own transactional.id, and worker processes it starts,
// kills and freezes. Kafka clusters and topics are the stack's; the test's
// records are told apart by chat ID.
type syncEnv struct {
	t        testing.TB
	stack    *devstack.Client
	ns       string
	tc       client.Client
	external string
	extStore *store.Store // the external service's store, to read its feed directly
	txnID    string
	procs    *stacktest.Procs

	mu      sync.Mutex
	metrics map[string]string // worker name -> base URL of its /metrics
}

func newSyncEnv(t testing.TB) *syncEnv {
	t.Helper()
	stack := stacktest.Connect(t)
	ns, tc := stacktest.FreshNamespace(t, stack)
	ext, st := externaltest.NewServerWithStore(t, api.Config{AdminToken: adminToken})
	e := &syncEnv{
		t: t, stack: stack, ns: ns, tc: tc, external: ext.URL, extStore: st,
		txnID: stacktest.UniqueName("sync"), metrics: map[string]string{},
	}
	// Cleanups run last first: the workers are killed, then the workflow
	// is terminated (before, a worker could start it again).
	t.Cleanup(e.terminate)
	e.procs = stacktest.NewProcs(t, workerBin)
	return e
}

// startWorker starts a sync worker process named name in region "a" or "b"
// (its home Kafka cluster; the other is its failover).
func (e *syncEnv) startWorker(name, region string) {
	e.t.Helper()
	a := stacktest.Env(e.t, e.stack, devstack.EnvKafkaABootstrap)
	b, _ := e.stack.Env().Get(devstack.EnvKafkaBBootstrap)
	home, other, otherName := a, b, "b"
	if region == "b" {
		home, other, otherName = b, a, "a"
	}
	addr := stacktest.FreeAddr(e.t)
	env := []string{
		"TEMPORAL_ADDRESS=" + stacktest.Env(e.t, e.stack, devstack.EnvTemporalAddress),
		"TEMPORAL_NAMESPACE=" + e.ns,
		"EXTERNAL_URL=" + e.external,
		"KAFKA_BOOTSTRAP=" + home,
		"KAFKA_CLUSTER=" + region,
		"SYNC_TRANSACTIONAL_ID=" + e.txnID,
		"SYNC_LISTEN_ADDR=" + addr,
		"SYNC_IDENTITY=" + name,
		"LOG_LEVEL=debug",
	}
	if other != "" {
		env = append(env, "KAFKA_FAILOVER_BOOTSTRAP="+other, "KAFKA_FAILOVER_CLUSTER="+otherName)
	}
	e.procs.Start(name, env...)
	e.mu.Lock()
	e.metrics[name] = "http://" + addr
	e.mu.Unlock()
}

// worker returns the worker process last started as name.
func (e *syncEnv) worker(name string) *stacktest.Proc {
	e.t.Helper()
	return e.procs.Get(name)
}

// kill sends SIGKILL to a worker and waits for it to die.
func (e *syncEnv) kill(name string) {
	e.t.Helper()
	e.worker(name).Kill()
}

// signal sends sig to a worker.
func (e *syncEnv) signal(name string, sig syscall.Signal) {
	e.t.Helper()
	if err := e.worker(name).Signal(sig); err != nil {
		e.t.Fatal(err)
	}
}

// logOf returns what worker name has logged so far.
func (e *syncEnv) logOf(name string) (string, error) {
	b, err := os.ReadFile(e.worker(name).Log)
	return string(b), err
}

func (e *syncEnv) terminate() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.tc.TerminateWorkflow(ctx, workflows.WorkflowID, "", "test over")
}

// activeWorker returns the identity of the worker whose attempt of the sync
// activity is running, or an error while none is.
func (e *syncEnv) activeWorker(ctx context.Context) (string, error) {
	who, _, err := e.activeAttempt(ctx)
	return who, err
}

// activeAttempt returns the running attempt of the sync activity: its
// worker's identity and its token as in the change.HeaderAttempt header.
func (e *syncEnv) activeAttempt(ctx context.Context) (worker, attempt string, err error) {
	desc, err := e.tc.DescribeWorkflowExecution(ctx, workflows.WorkflowID, "")
	if err != nil {
		return "", "", err
	}
	run := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	for _, a := range desc.GetPendingActivities() {
		if a.GetState() == enumspb.PENDING_ACTIVITY_STATE_STARTED && a.GetLastWorkerIdentity() != "" {
			return a.GetLastWorkerIdentity(), fmt.Sprintf("%s/%s#%d", run, a.GetActivityId(), a.GetAttempt()), nil
		}
	}
	return "", "", errors.New("no sync activity running")
}

// waitActive waits until a worker runs the sync activity and returns it.
func (e *syncEnv) waitActive(deadline time.Duration) string {
	e.t.Helper()
	var who string
	stacktest.WaitFor(e.t, deadline, "a worker to run the sync activity", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		who, err = e.activeWorker(ctx)
		return err
	})
	return who
}

// waitAttemptAfter waits until an attempt other than prev runs the sync
// activity, and returns its worker and attempt.
func (e *syncEnv) waitAttemptAfter(prev string) (worker, attempt string) {
	e.t.Helper()
	stacktest.WaitFor(e.t, time.Minute, "a new attempt of the sync activity", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if worker, attempt, err = e.activeAttempt(ctx); err != nil {
			return err
		}
		if attempt == prev {
			return errors.New("still " + prev)
		}
		return nil
	})
	return worker, attempt
}

// The workers of the scenarios, name -> region: one, two in region a, and
// three over both regions for the failover scenarios.
var (
	oneWorker    = map[string]string{"w1": "a"}
	twoWorkers   = map[string]string{"w1": "a", "w2": "a"}
	threeWorkers = map[string]string{"sync-a1": "a", "sync-a2": "a", "sync-b1": "b"}
)

// startWorkers starts the named workers (name -> region) and waits until
// one of them runs the sync activity.
func (e *syncEnv) startWorkers(workers map[string]string) {
	e.t.Helper()
	for n, region := range workers {
		e.startWorker(n, region)
	}
	e.waitActive(time.Minute)
}

// killActive waits for an attempt other than last, lets it run for a random
// moment of 0.2 to 2.2 s, kills -9 the worker running it and starts that
// worker again (so as many replicas keep running). It returns the killed
// worker, its attempt and when it was killed.
func (e *syncEnv) killActive(last string, rng *rand.Rand, workers map[string]string) (victim, attempt string, killedAt time.Time) {
	e.t.Helper()
	e.waitAttemptAfter(last)
	time.Sleep(time.Duration(200+rng.IntN(2000)) * time.Millisecond) // the random moment
	victim, attempt = e.waitAttemptAfter(last)                       // the attempt may have rotated meanwhile
	killedAt = time.Now()
	e.kill(victim)
	e.startWorker(victim, workers[victim])
	return victim, attempt, killedAt
}

// status queries the sync workflow.
func (e *syncEnv) status(ctx context.Context) (workflows.Status, error) {
	return stacktest.SyncStatus(ctx, e.tc)
}

// scrapeMetrics reads the Prometheus metrics served at url, by family name.
func scrapeMetrics(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := stacktest.ScrapeMetrics(url)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// setFaults replaces the external service's injected faults.
func (e *syncEnv) setFaults(body string) {
	e.t.Helper()
	stacktest.SetFaults(e.t, e.external, adminToken, body)
}
