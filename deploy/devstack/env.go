package devstack

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Keys of stack.env: the contract between the launcher, the tests and people.
// Every address and DSN of a running stack is here; a key is present only when
// its component runs in the stack's profile.
const (
	EnvDir          = "DEVSTACK_DIR"           // absolute state directory
	EnvProfile      = "DEVSTACK_PROFILE"       // single or geo
	EnvControlURL   = "DEVSTACK_CONTROL_URL"   // the launcher's control API (kill/stop/start/promote)
	EnvControlToken = "DEVSTACK_CONTROL_TOKEN" // bearer token of the control API

	EnvPGPrimaryAddr  = "PG_PRIMARY_ADDR" // host:port
	EnvPGStandbyAddr  = "PG_STANDBY_ADDR"
	EnvPGPrimaryDSN   = "PG_PRIMARY_DSN"   // internal database on the primary only
	EnvPGStandbyDSN   = "PG_STANDBY_DSN"   // internal database on the standby only (read-only until promoted)
	EnvPGInternalDSN  = "PG_INTERNAL_DSN"  // internal database, multi-host, read-write server: what writers use
	EnvPGExternalDSN  = "PG_EXTERNAL_DSN"  // the external simulator's database, on its own server
	EnvPGExternalAddr = "PG_EXTERNAL_ADDR" // host:port of that server
	EnvPGAdminDSN     = "PG_ADMIN_DSN"     // superuser on the primary's postgres database (tests, promotion)

	EnvRedisAddr = "REDIS_ADDR"

	EnvKafkaABootstrap = "KAFKA_A_BOOTSTRAP"
	EnvKafkaBBootstrap = "KAFKA_B_BOOTSTRAP"
	EnvKafkaLibs       = "KAFKA_LIBS" // directory of the Kafka jars the stack runs, for Kafka's own tools

	EnvTemporalAddress   = "TEMPORAL_ADDRESS"
	EnvTemporalNamespace = "TEMPORAL_NAMESPACE"
	EnvTemporalUIURL     = "TEMPORAL_UI_URL"
)

// Env is the content of a stack's stack.env.
type Env map[string]string

// Get returns the value of key, or an error naming the key and the file when
// the stack does not provide it.
func (e Env) Get(key string) (string, error) {
	v, ok := e[key]
	if !ok || v == "" {
		return "", fmt.Errorf("stack.env has no %s (profile %q)", key, e[EnvProfile])
	}
	return v, nil
}

// Environ returns the variables as KEY=VALUE strings, sorted by key.
func (e Env) Environ() []string {
	keys := slices.Sorted(maps.Keys(e))
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+e[k])
	}
	return out
}

// writeEnvFile writes env atomically with mode 0600 (it holds passwords).
func writeEnvFile(path string, env Env) error {
	var b strings.Builder
	b.WriteString("# Written by the devstack launcher; valid while it runs. KEY=VALUE, no quoting.\n")
	for _, kv := range env.Environ() {
		b.WriteString(kv)
		b.WriteByte('\n')
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

// ReadEnvFile reads a stack.env (or any KEY=VALUE file written by the launcher).
func ReadEnvFile(path string) (Env, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := Env{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: malformed line %q", filepath.Base(path), line)
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return env, nil
}
