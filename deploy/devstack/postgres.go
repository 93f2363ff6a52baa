package devstack

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
)

// PGAppUser is the role our services connect as; it owns the internal
// database (and, on its own server, the external one) and may create
// databases (tests make a fresh one each).
const PGAppUser = "chatpoc"

// Postgres roles and databases of the stack.
const (
	pgSuperuser   = "postgres"
	pgAppUser     = "chatpoc"
	pgReplicator  = "replicator"
	pgInternalDB  = "internal"
	pgExternalDB  = "external"
	pgStandbySlot = "devstack_standby"
)

// ErrPrimaryFailedOver reports an attempt to start the old primary after the
// standby was promoted: it would run as a second, diverged primary.
var ErrPrimaryFailedOver = errors.New("the standby was promoted; the old primary cannot rejoin (restart the stack with -fresh)")

// pgArgs are the server settings of both clusters. Unix sockets are off: all
// access is over TCP on loopback, with scram-sha-256 passwords.
func pgArgs(dataDir string, port int) []string {
	settings := []string{
		"listen_addresses=127.0.0.1",
		fmt.Sprintf("port=%d", port),
		"unix_socket_directories=",
		"max_connections=300",
		"wal_level=replica",
		"max_wal_senders=10",
		"max_replication_slots=10",
		"hot_standby=on",
		"hot_standby_feedback=on",
		"log_min_messages=warning",
		// JIT compiles a query when its estimated cost is high, which short
		// OLTP statements over freshly created (unanalysed) tables reach: the
		// feed's page read took ~300 ms instead of ~3 ms in a new database.
		"jit=off",
		"log_line_prefix=%m [%p] ",
	}
	args := []string{"-D", dataDir}
	for _, kv := range settings {
		args = append(args, "-c", kv)
	}
	return args
}

func (s *Stack) pgPrimary() *component {
	return s.pgServer(PGPrimary, portPGPrimary, func(ctx context.Context) error {
		if s.promoted {
			return ErrPrimaryFailedOver
		}
		return nil
	}, true, pgInternalDB)
}

// pgExternal is the external simulator's server: a primary of its own,
// without a standby (the simulated third party's availability is not ours
// to provide).
func (s *Stack) pgExternal() *component {
	return s.pgServer(PGExternal, portPGExternal, nil, false, pgExternalDB)
}

// pgServer is a primary Postgres server: its cluster created once (after
// check, if any, allows it), then its roles — the replication role too if
// replicated — and databases.
func (s *Stack) pgServer(n Name, portKey string, check func(context.Context) error, replicated bool, dbs ...string) *component {
	port := s.ports[portKey]
	dir := s.dataDir(n)
	return &component{
		name: n,
		addr: hostPort(port),
		prepare: func(ctx context.Context) error {
			if check != nil {
				if err := check(ctx); err != nil {
					return err
				}
			}
			return s.initdb(ctx, n, dir)
		},
		spec: func() procSpec {
			spec := s.baseSpec(n, filepath.Join(s.tools.pgBin, "postgres"), pgArgs(dir, port)...)
			spec.asUser = s.tools.pgUser
			return spec
		},
		ready: func(ctx context.Context) error {
			return pgPing(ctx, s.pgDSN(pgSuperuser, s.secrets.pgSuperuser, "postgres", port))
		},
		initialize: func(ctx context.Context) error {
			return s.pgBootstrap(ctx, port, replicated, dbs...)
		},
	}
}

func (s *Stack) pgStandby() *component {
	port := s.ports[portPGStandby]
	dir := s.dataDir(PGStandby)
	return &component{
		name:    PGStandby,
		after:   []Name{PGPrimary},
		addr:    hostPort(port),
		prepare: func(ctx context.Context) error { return s.basebackup(ctx, dir) },
		spec: func() procSpec {
			spec := s.baseSpec(PGStandby, filepath.Join(s.tools.pgBin, "postgres"), pgArgs(dir, port)...)
			spec.asUser = s.tools.pgUser
			return spec
		},
		ready: func(ctx context.Context) error {
			conn, err := pgx.Connect(ctx, s.pgDSN(pgSuperuser, s.secrets.pgSuperuser, "postgres", port))
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			var inRecovery bool
			if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
				return err
			}
			if !inRecovery {
				return nil // promoted: a primary of its own
			}
			var streaming bool
			err = conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')").Scan(&streaming)
			if err != nil {
				return err
			}
			if !streaming {
				return errors.New("not streaming from the primary yet")
			}
			return nil
		},
	}
}

// pgEnv adds the Postgres addresses and DSNs to env.
func (s *Stack) pgEnv(env Env) {
	primary := s.ports[portPGPrimary]
	env[EnvPGPrimaryAddr] = hostPort(primary)
	env[EnvPGPrimaryDSN] = s.pgDSN(pgAppUser, s.secrets.pgApp, pgInternalDB, primary)
	env[EnvPGAdminDSN] = s.pgDSN(pgSuperuser, s.secrets.pgSuperuser, "postgres", primary)
	ports := []int{primary}
	if s.opts.Profile.Has(PGStandby) {
		standby := s.ports[portPGStandby]
		env[EnvPGStandbyAddr] = hostPort(standby)
		env[EnvPGStandbyDSN] = s.pgDSN(pgAppUser, s.secrets.pgApp, pgInternalDB, standby)
		ports = append(ports, standby)
	}
	env[EnvPGInternalDSN] = s.pgDSN(pgAppUser, s.secrets.pgApp, pgInternalDB, ports...)
	external := s.ports[portPGExternal]
	env[EnvPGExternalAddr] = hostPort(external)
	env[EnvPGExternalDSN] = s.pgDSN(pgAppUser, s.secrets.pgApp, pgExternalDB, external)
}

// pgDSN builds a postgres:// URL. With several ports it is a multi-host DSN
// that connects to whichever server accepts writes, so clients follow a
// promotion of the standby.
func (s *Stack) pgDSN(user, password, db string, ports ...int) string {
	hosts := make([]string, len(ports))
	for i, p := range ports {
		hosts[i] = hostPort(p)
	}
	q := url.Values{"sslmode": {"disable"}}
	if len(ports) > 1 {
		q.Set("target_session_attrs", "read-write")
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     strings.Join(hosts, ","),
		Path:     "/" + db,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// pgReadDSN is the internal database for region b's readers: the standby
// first, the primary if the standby is down (prefer-standby).
func (s *Stack) pgReadDSN() string {
	dsn := s.pgDSN(pgAppUser, s.secrets.pgApp, pgInternalDB, s.ports[portPGStandby], s.ports[portPGPrimary])
	return strings.Replace(dsn, "target_session_attrs=read-write", "target_session_attrs=prefer-standby", 1)
}

func pgPing(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// initdb creates a primary's cluster (component n's) once.
func (s *Stack) initdb(ctx context.Context, n Name, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		return nil
	}
	if err := s.pgDir(dir); err != nil {
		return err
	}
	pwFile := filepath.Join(dir, "..", string(n)+".pwfile")
	if err := os.WriteFile(pwFile, []byte(s.secrets.pgSuperuser+"\n"), 0o600); err != nil {
		return fmt.Errorf("write password file: %w", err)
	}
	defer os.Remove(pwFile)
	if err := s.chownPG(pwFile); err != nil {
		return err
	}
	return s.runPGTool(ctx, n, nil, "initdb",
		"-D", dir, "-U", pgSuperuser, "--pwfile", pwFile,
		"--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
		"--encoding=UTF8", "--locale=C.UTF-8")
}

// pgBootstrap creates the roles (the replication role too if replicated)
// and databases of the server on port, idempotently.
func (s *Stack) pgBootstrap(ctx context.Context, port int, replicated bool, dbs ...string) error {
	conn, err := pgx.Connect(ctx, s.pgDSN(pgSuperuser, s.secrets.pgSuperuser, "postgres", port))
	if err != nil {
		return fmt.Errorf("connect as superuser: %w", err)
	}
	defer conn.Close(ctx)
	roles := []struct{ name, attrs, password string }{
		{pgAppUser, "LOGIN CREATEDB", s.secrets.pgApp},
	}
	if replicated {
		roles = append(roles, struct{ name, attrs, password string }{pgReplicator, "LOGIN REPLICATION", s.secrets.pgReplicator})
	}
	for _, r := range roles {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", r.name).Scan(&exists); err != nil {
			return fmt.Errorf("look up role %s: %w", r.name, err)
		}
		verb := "CREATE"
		if exists {
			verb = "ALTER"
		}
		// Role names are constants; the password goes through format('%L') so it is quoted by the server.
		var stmt string
		if err := conn.QueryRow(ctx, "SELECT format('%s ROLE %I WITH %s PASSWORD %L', $1::text, $2::text, $3::text, $4::text)",
			verb, r.name, r.attrs, r.password).Scan(&stmt); err != nil {
			return fmt.Errorf("format role %s: %w", r.name, err)
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s role %s: %w", strings.ToLower(verb), r.name, err)
		}
	}
	for _, db := range dbs {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
			return fmt.Errorf("look up database %s: %w", db, err)
		}
		if exists {
			continue
		}
		if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", pgx.Identifier{db}.Sanitize(), pgx.Identifier{pgAppUser}.Sanitize())); err != nil {
			return fmt.Errorf("create database %s: %w", db, err)
		}
	}
	return nil
}

// basebackup clones the primary into the standby's directory once, with a
// replication slot so the primary keeps the WAL the standby still needs.
func (s *Stack) basebackup(ctx context.Context, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove incomplete standby: %w", err)
	}
	if err := s.pgDir(dir); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, s.pgDSN(pgSuperuser, s.secrets.pgSuperuser, "postgres", s.ports[portPGPrimary]))
	if err != nil {
		return fmt.Errorf("connect to primary: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", pgStandbySlot); err != nil {
		return fmt.Errorf("drop stale replication slot: %w", err)
	}
	env := []string{"PGPASSWORD=" + s.secrets.pgReplicator}
	return s.runPGTool(ctx, PGStandby, env, "pg_basebackup",
		"-h", "127.0.0.1", "-p", fmt.Sprint(s.ports[portPGPrimary]), "-U", pgReplicator, "-w",
		"-D", dir, "-R", "-X", "stream", "-C", "-S", pgStandbySlot, "--checkpoint=fast")
}

// PromoteStandby promotes the streaming standby to a primary (pg_promote) and
// waits until it accepts writes. The old primary can no longer be started.
func (s *Stack) PromoteStandby(ctx context.Context) error {
	if !s.opts.Profile.Has(PGStandby) {
		return fmt.Errorf("%w %q in profile %s", ErrUnknownComponent, PGStandby, s.opts.Profile)
	}
	conn, err := pgx.Connect(ctx, s.pgDSN(pgSuperuser, s.secrets.pgSuperuser, "postgres", s.ports[portPGStandby]))
	if err != nil {
		return fmt.Errorf("connect to standby: %w", err)
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(true, 60)").Scan(&ok); err != nil {
		return fmt.Errorf("promote standby: %w", err)
	}
	if !ok {
		return errors.New("promote standby: not promoted within 60s")
	}
	s.mu.Lock()
	s.promoted = true
	s.mu.Unlock()
	if err := os.WriteFile(s.path("promoted"), nil, 0o644); err != nil {
		return fmt.Errorf("record promotion: %w", err)
	}
	s.progress.line(PGStandby, "promoted", "now the primary")
	return nil
}

// pgDir creates a data directory the Postgres user owns, reachable by it.
func (s *Stack) pgDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	if s.tools.pgUser == nil {
		return nil
	}
	if err := s.chownPG(dir); err != nil {
		return err
	}
	return grantSearch(filepath.Dir(dir), s.progress)
}

func (s *Stack) chownPG(path string) error {
	if s.tools.pgUser == nil {
		return nil
	}
	if err := os.Chown(path, int(s.tools.pgUser.uid), int(s.tools.pgUser.gid)); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, s.tools.pgUser.name, err)
	}
	return nil
}

// grantSearch makes dir and its ancestors searchable (o+x) so the postgres
// user can reach its data directory when the checkout lives under a private
// directory such as a mktemp -d. It changes only directories that lack it,
// and says so.
func grantSearch(dir string, p *progress) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("let the postgres user reach %s: %w", d, err)
			}
			p.printf("devstack: granted o+x on %s so the postgres user can reach its data\n", d)
		}
		if d == "/" {
			return nil
		}
	}
}

// runPGTool runs a Postgres client tool to completion as the Postgres user,
// appending its output to the component's log.
func (s *Stack) runPGTool(ctx context.Context, n Name, env []string, tool string, args ...string) error {
	return s.runLogged(ctx, n, filepath.Dir(s.dataDir(n)), env, s.tools.pgUser, filepath.Join(s.tools.pgBin, tool), args...)
}
