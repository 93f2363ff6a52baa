package devstack

import (
	"context"
	"strconv"

	"github.com/redis/go-redis/v9"
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
