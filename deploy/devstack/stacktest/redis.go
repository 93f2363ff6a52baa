package stacktest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatpoc/chat-poc/deploy/devstack"
)

// RedisStartTimeout bounds waiting for a test's own Redis to answer.
const RedisStartTimeout = 30 * time.Second

// StartRedis starts a Redis of the test's own on a free loopback port, as
// the stack starts its own (no persistence) and with the stack's eviction
// policy, bounded to maxmemory (e.g. "4mb"): for a test that needs a
// setting the shared Redis must not be given (CONFIG SET on it would
// change it for everyone). It returns the address once Redis answers; the
// server is stopped when the test ends.
func StartRedis(t testing.TB, maxmemory string) string {
	t.Helper()
	bin := os.Getenv(devstack.EnvRedis)
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			t.Fatalf("redis-server not found in PATH (%s unset): %v", devstack.EnvRedis, err)
		}
	}
	addr := FreeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	dir := t.TempDir()
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--protected-mode", "yes",
		"--dir", dir, "--save", "", "--appendonly", "no",
		"--maxmemory", maxmemory, "--maxmemory-policy", devstack.RedisEvictionPolicy,
		"--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	WaitFor(t, RedisStartTimeout, "the test's Redis on "+addr+" to answer", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return rdb.Ping(ctx).Err()
	})
	return addr
}

// RedisEvictedKeys returns rdb's evicted_keys (INFO stats): how many keys
// its Redis evicted under maxmemory since it started.
func RedisEvictedKeys(ctx context.Context, rdb *redis.Client) (int64, error) {
	return redisInfoField(ctx, rdb, "stats", "evicted_keys")
}

// redisInfoField returns an integer field of a section of rdb's INFO.
func redisInfoField(ctx context.Context, rdb *redis.Client, section, field string) (int64, error) {
	info, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("INFO %s has no %s", section, field)
}
