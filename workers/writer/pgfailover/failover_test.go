// Package pgfailover_test kills the shared stack's Postgres primary under a
// running writer and promotes the standby. It is a package of its own
// because the stack cannot get its old primary back: `make test` runs it
// after every other package.
package pgfailover_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/e2e/chaostest"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

var writerBin string

func TestMain(m *testing.M) { stacktest.MainWithCommand(m, "..", "writer", &writerBin) }

// TestPromotedStandbyLosesNothing streams records into a writer whose
// database DSN lists the primary and the standby. Mid-stream it stops the
// primary's WAL sender, lets the writer commit more batches that the
// standby therefore never receives, kills the primary and promotes the
// standby: the promoted server has lost the writer's last commits, offsets
// with them. The writer must notice (its next batch's offsets do not start
// where the new primary's are), read those records again, and the database
// must end up with every change.
//
// It is also the chaos suite's Postgres scenario (one promotion is all a
// stack has: the old primary cannot rejoin): the stack's own pipeline runs
// under a storm of external writes throughout — its writers lose commits
// in the same failover — and the convergence checker must find the stack's
// internal database and two recorded UI streams complete and in order.
func TestPromotedStandbyLosesNothing(t *testing.T) {
	chaos := chaostest.New(t)
	stack := chaos.Stack
	ctx := t.Context()
	adminPrimary := stacktest.Env(t, stack, devstack.EnvPGAdminDSN)
	adminStandby := withHost(t, adminPrimary, stacktest.Env(t, stack, devstack.EnvPGStandbyAddr), "")
	dbName := strings.ReplaceAll(stacktest.UniqueName("failover"), "-", "_")
	exec(t, adminPrimary, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()+" OWNER "+pgx.Identifier{devstack.PGAppUser}.Sanitize())
	t.Cleanup(func() {
		// On whichever server is the primary now.
		drop := "DROP DATABASE IF EXISTS " + pgx.Identifier{dbName}.Sanitize() + " WITH (FORCE)"
		if err := execErr(adminStandby, drop); err != nil {
			exec(t, adminPrimary, drop)
		}
	})
	dsn := withHost(t, stacktest.Env(t, stack, devstack.EnvPGInternalDSN), "", dbName)
	pool := stacktest.Pool(t, dsn, 4)
	db := chatdb.New(pool)

	bootstrap := stacktest.Env(t, stack, devstack.EnvKafkaABootstrap)
	name := stacktest.UniqueName("pgf")
	topics := []string{name + "-messages", name + "-chats"}
	stacktest.CreateTopics(t, bootstrap, 4, topics...)
	producer := stacktest.NewProducer(t, bootstrap)

	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 3))
	h := chatdbtest.NewHistory(r, name, 30, 8000)
	msgs, chats := h.Arrivals(r, 10)
	m := chatdbtest.NewModel()
	m.Apply(chatdb.Batch{Messages: msgs, Chats: chats})
	recs := chatdbtest.Records(r, topics[0], topics[1], msgs, chats)

	ps := stacktest.NewProcs(t, writerBin)
	ps.Start("writer-1",
		"PG_INTERNAL_DSN="+dsn, "KAFKA_BOOTSTRAP="+bootstrap, "KAFKA_CLUSTER=a",
		"WRITER_GROUP="+name+"-writer", "KAFKA_MESSAGE_TOPIC="+topics[0], "KAFKA_CHAT_TOPIC="+topics[1],
		"WRITER_BATCH_MAX=100", "WRITER_LISTEN_ADDR="+stacktest.FreeAddr(t), "WRITER_IDENTITY=writer-1", "LOG_LEVEL=debug")

	// 20 records every 50 ms (400/s) for about 20 s.
	errc := make(chan error, 1)
	go func() { errc <- stacktest.Produce(producer, recs, 20, 50*time.Millisecond) }()

	// The sum of the stored offsets grows with every committed batch.
	readOffsets := func(admin string) (int64, error) {
		var n int64
		q := `SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets`
		err := queryRow(ctx, withHost(t, admin, "", dbName), q, &n)
		return n, err
	}
	offsetsOn := func(admin string) int64 {
		t.Helper()
		n, err := readOffsets(admin)
		if err != nil {
			t.Fatalf("read offsets: %v", err)
		}
		return n
	}
	stacktest.WaitFor(t, time.Minute, "the writer to store offsets on the primary", func() error {
		n, err := readOffsets(adminPrimary)
		if err == nil && n < 500 {
			err = fmt.Errorf("offsets sum to %d", n)
		}
		return err
	})

	var killed time.Time
	var atKill int64
	chaos.Run(func(context.Context) {
		killed, atKill = failOver(t, stack, adminPrimary, adminStandby, offsetsOn)
	})

	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, 2*time.Minute, "the database to hold every change's last version", func() error {
		return m.Diff(context.Background(), db, name)
	})
	t.Logf("converged %s after the primary was killed", time.Since(killed).Round(time.Millisecond))
	if want := int64(len(recs)); offsetsOn(adminStandby) < want {
		// Offsets also count transaction markers, so they sum to more than
		// the records; fewer means records were never read.
		t.Errorf("stored offsets sum to %d, fewer than the %d records (%d at the kill)", offsetsOn(adminStandby), want, atKill)
	}
}

// failOver stops the primary's WAL sender, waits until the test's writer
// committed 300 more records' offsets (which the standby never receives),
// kills the primary and promotes the standby. It returns when the primary
// was killed and the offsets it had then.
func failOver(t *testing.T, stack *devstack.Client, adminPrimary, adminStandby string, offsetsOn func(string) int64) (time.Time, int64) {
	ctx := t.Context()
	// Stop shipping WAL to the standby, and let the writer commit on.
	var sender int
	if err := queryRow(ctx, adminPrimary, `SELECT pid FROM pg_stat_replication LIMIT 1`, &sender); err != nil {
		t.Fatalf("find the WAL sender: %v", err)
	}
	if err := syscall.Kill(sender, syscall.SIGSTOP); err != nil {
		t.Fatalf("stop the WAL sender (pid %d): %v", sender, err)
	}
	// Postgres backends are session leaders, outside the server's process
	// group: killing the server leaves a stopped one behind, and continuing
	// it could still send the standby what it holds.
	killSender := func() { _ = syscall.Kill(sender, syscall.SIGKILL) }
	t.Cleanup(killSender)
	frozen := offsetsOn(adminPrimary)
	stacktest.WaitFor(t, time.Minute, "the writer to commit after replication stopped", func() error {
		if n := offsetsOn(adminPrimary); n < frozen+300 {
			return fmt.Errorf("offsets moved %d since", n-frozen)
		}
		return nil
	})
	atKill := offsetsOn(adminPrimary)
	killed := time.Now()
	if err := stack.Kill(ctx, devstack.PGPrimary); err != nil {
		t.Fatal(err)
	}
	killSender()
	// What the standby has is final now; read it (a hot standby serves
	// reads) before the promotion lets the writer write again.
	onStandby := offsetsOn(adminStandby)
	t.Logf("offsets: %d when replication stopped, %d when the primary died, %d on the standby (%d records' commits lost)",
		frozen, atKill, onStandby, atKill-onStandby)
	if onStandby >= atKill {
		t.Fatalf("the standby has every commit (offsets %d >= %d): the test lost nothing to recover", onStandby, atKill)
	}
	if err := stack.PromoteStandby(ctx); err != nil {
		t.Fatal(err)
	}
	return killed, atKill
}

// withHost returns dsn with its host list replaced by host (if not empty)
// and its database by db (if not empty).
func withHost(t testing.TB, dsn, host, db string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		u.Host = host
		q := u.Query()
		q.Del("target_session_attrs")
		u.RawQuery = q.Encode()
	}
	if db != "" {
		u.Path = "/" + db
	}
	return u.String()
}

func exec(t testing.TB, dsn, sql string) {
	t.Helper()
	if err := execErr(dsn, sql); err != nil {
		t.Fatal(err)
	}
}

func execErr(dsn, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

func queryRow(ctx context.Context, dsn, sql string, dest ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dest...)
}
