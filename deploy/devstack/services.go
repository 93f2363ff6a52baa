package devstack

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// Our own services, run by the launcher from this checkout's sources.
const (
	// External is the simulated third-party chat service (apps/external).
	External Name = "external"
	// SyncA1 and SyncA2 are region a's sync workers (workers/sync), SyncB1 is
	// region b's: each publishes to its region's Kafka cluster and fails over
	// to the other; exactly one of them runs the sync activity at a time.
	SyncA1 Name = "sync-a1"
	SyncA2 Name = "sync-a2"
	SyncB1 Name = "sync-b1"
	// WriterA1 and WriterA2 are region a's writers (workers/writer), one
	// consumer group on Kafka a's topics and their copies mirrored from b;
	// WriterB1 is region b's, on Kafka b. All write to the Postgres primary
	// (the multi-host DSN follows a promotion).
	WriterA1 Name = "writer-a1"
	WriterA2 Name = "writer-a2"
	WriterB1 Name = "writer-b1"
	// InternalA1 is region a's internal app (apps/internal) on the
	// documented port 30002, reading Kafka a and the Postgres primary;
	// InternalB1 is region b's, reading Kafka b and the standby.
	InternalA1 Name = "internal-a1"
	InternalB1 Name = "internal-b1"
)

// Keys of stack.env for our services.
const (
	EnvExternalURL        = "EXTERNAL_URL"         // base URL of the external service
	EnvExternalAdminToken = "EXTERNAL_ADMIN_TOKEN" // bearer token of its /admin/faults
	EnvInternalURL        = "INTERNAL_URL"         // base URL of region a's internal app
	EnvInternalBURL       = "INTERNAL_B_URL"       // base URL of region b's internal app
)

// The UIs' documented ports (as in the original's NodePorts).
const (
	fixedExternalPort = 30001
	fixedInternalPort = 30002 // region a's internal app
)

func (s *Stack) external() *component {
	port := s.ports[portExternal]
	c := s.newService(Service{
		Name:  External,
		Build: "./apps/external",
		Env: []string{
			"EXTERNAL_LISTEN_ADDR=" + hostPort(port),
			// The UI is opened as http://localhost:PORT; allow that Origin too.
			"EXTERNAL_ALLOWED_ORIGINS=localhost:" + strconv.Itoa(port),
		},
		After:    []Name{PGExternal},
		ReadyURL: "http://" + hostPort(port) + "/readyz",
		LiveURL:  "http://" + hostPort(port) + "/healthz",
	}, nil)
	c.addr = "http://localhost:" + strconv.Itoa(port)
	return c
}

// syncWorker runs a sync worker of the given region; its identity in
// Temporal is its component name, so the status query and the workflow's
// pending activity name the component to kill.
func (s *Stack) syncWorker(n Name, port string) *component {
	home, other := KafkaA, KafkaB
	homeName, otherName := "a", "b"
	if n == SyncB1 {
		home, other, homeName, otherName = KafkaB, KafkaA, "b", "a"
	}
	env := []string{
		"KAFKA_BOOTSTRAP=" + s.kafkaBootstrap(home),
		"KAFKA_CLUSTER=" + homeName,
		"SYNC_LISTEN_ADDR=" + hostPort(s.ports[port]),
		"SYNC_IDENTITY=" + string(n),
	}
	after := []Name{Temporal, External, home}
	if s.opts.Profile.Has(other) {
		env = append(env, "KAFKA_FAILOVER_BOOTSTRAP="+s.kafkaBootstrap(other), "KAFKA_FAILOVER_CLUSTER="+otherName)
		after = append(after, other)
	}
	return s.newService(Service{
		Name:     n,
		Build:    "./workers/sync",
		Env:      env,
		After:    after,
		ReadyURL: "http://" + hostPort(s.ports[port]) + "/readyz",
		LiveURL:  "http://" + hostPort(s.ports[port]) + "/healthz",
	}, nil)
}

// writer runs a writer consuming Kafka cluster kafka.
func (s *Stack) writer(n, kafka Name, port string) *component {
	cluster := "a"
	if kafka == KafkaB {
		cluster = "b"
	}
	return s.newService(Service{
		Name:  n,
		Build: "./workers/writer",
		Env: []string{
			"KAFKA_BOOTSTRAP=" + s.kafkaBootstrap(kafka),
			"KAFKA_CLUSTER=" + cluster,
			"WRITER_LISTEN_ADDR=" + hostPort(s.ports[port]),
			"WRITER_IDENTITY=" + string(n),
		},
		After:    []Name{PGPrimary, kafka},
		ReadyURL: "http://" + hostPort(s.ports[port]) + "/readyz",
		LiveURL:  "http://" + hostPort(s.ports[port]) + "/healthz",
	}, nil)
}

// internalApp runs an instance of the internal app on Kafka cluster kafka;
// its consumer group is its name, stable across restarts. Region b's reads
// the standby first (prefer-standby), region a's the primary.
func (s *Stack) internalApp(n, kafka Name, port string) *component {
	p := s.ports[port]
	env := []string{
		"INTERNAL_LISTEN_ADDR=" + hostPort(p),
		// The UI is opened as http://localhost:PORT; allow that Origin too.
		"INTERNAL_ALLOWED_ORIGINS=localhost:" + strconv.Itoa(p),
		"KAFKA_BOOTSTRAP=" + s.kafkaBootstrap(kafka),
		"INTERNAL_GROUP=" + string(n),
		"INTERNAL_IDENTITY=" + string(n),
	}
	after := []Name{PGPrimary, Redis, kafka}
	if kafka == KafkaB && s.opts.Profile.Has(PGStandby) {
		env = append(env, "PG_INTERNAL_DSN="+s.pgReadDSN())
		after = append(after, PGStandby)
	}
	c := s.newService(Service{
		Name:     n,
		Build:    "./apps/internal",
		Env:      env,
		After:    after,
		ReadyURL: "http://" + hostPort(p) + "/readyz",
		LiveURL:  "http://" + hostPort(p) + "/healthz",
	}, nil)
	c.addr = "http://localhost:" + strconv.Itoa(p)
	return c
}

func (s *Stack) kafkaBootstrap(n Name) string {
	if n == KafkaB {
		return hostPort(s.ports[portKafkaB])
	}
	return hostPort(s.ports[portKafkaA])
}

// buildService builds one of our commands from the checkout into the state
// directory's bin/ (Go's build cache makes an unchanged rebuild quick).
func (s *Stack) buildService(ctx context.Context, n Name, pkg string) (string, error) {
	bin := s.path("bin", string(n))
	began := time.Now()
	if err := s.runLogged(ctx, n, s.opts.RepoRoot, nil, nil, s.tools.goBin, "build", "-o", bin, pkg); err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	s.opts.Logger.Debug("built service", "service", n, "took", time.Since(began))
	return filepath.Clean(bin), nil
}
