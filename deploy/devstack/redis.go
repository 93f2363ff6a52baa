package devstack

import (
	"context"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// The local Redis's memory bound and what it does at the bound. The cache
// holds each instance's changes of the last few minutes (the internal app's
// INTERNAL_CACHE_TTL); the bound keeps a storm, or a window set too long,
// from growing Redis past what the machine can spare. At the bound Redis
// evicts the least recently used keys, whichever they are (every key of the
// cache is disposable: an evicted entry is read from Postgres, and the
// app's version checks keep an older version from reaching a client);
// allkeys rather than volatile, so that a key without a TTL can never make
// Redis refuse the app's writes. docker-compose.yaml and deploy/k8s set the
// same policy.
const (
	RedisMaxMemory      = "256mb"
	RedisEvictionPolicy = "allkeys-lru"
)

func (s *Stack) redis() *component {
	port := s.ports[portRedis]
	return &component{
		name: Redis,
		addr: hostPort(port),
		spec: func() procSpec {
			// A cache: nothing is persisted, so a restart starts empty, as a
			// flush would.
			return s.baseSpec(Redis, s.tools.redis,
				"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--protected-mode", "yes",
				"--dir", s.dataDir(Redis), "--save", "", "--appendonly", "no",
				"--maxmemory", RedisMaxMemory, "--maxmemory-policy", RedisEvictionPolicy,
				"--daemonize", "no", "--logfile", "")
		},
		prepare: func(context.Context) error { return mkdirs(s.dataDir(Redis)) },
		ready: func(ctx context.Context) error {
			c := redis.NewClient(&redis.Options{Addr: hostPort(port), MaxRetries: -1})
			defer c.Close()
			return c.Ping(ctx).Err()
		},
	}
}
