package devstack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// PortMode says whether the ports a person opens are the well-known ones.
type PortMode string

const (
	// PortsFixed uses the documented ports for what a person opens (Temporal
	// 7233 and its UI 8233, external 30001, internal 30002) and free ports for
	// the rest. This is what `make run` uses.
	PortsFixed PortMode = "fixed"
	// PortsAuto picks free ports for everything, so several stacks can run on
	// one machine (tests).
	PortsAuto PortMode = "auto"
)

// ParsePortMode returns the mode named s.
func ParsePortMode(s string) (PortMode, error) {
	switch m := PortMode(s); m {
	case PortsFixed, PortsAuto:
		return m, nil
	}
	return "", fmt.Errorf("unknown port mode %q: use fixed or auto", s)
}

// Port names: the keys of ports.env, one per listening socket the launcher assigns.
const (
	portPGPrimary       = "pg-primary"
	portPGStandby       = "pg-standby"
	portPGExternal      = "pg-external"
	portRedis           = "redis"
	portKafkaA          = "kafka-a"
	portKafkaAControl   = "kafka-a-controller"
	portKafkaB          = "kafka-b"
	portKafkaBControl   = "kafka-b-controller"
	portTemporal        = "temporal"
	portTemporalUI      = "temporal-ui"
	portControl         = "control"
	portExternal        = "external"
	portSyncA1          = "sync-a1"
	portSyncA2          = "sync-a2"
	portSyncB1          = "sync-b1"
	portWriterA1        = "writer-a1"
	portWriterA2        = "writer-a2"
	portWriterB1        = "writer-b1"
	portInternalA1      = "internal-a1"
	portInternalB1      = "internal-b1"
	fixedTemporalPort   = 7233
	fixedTemporalUIPort = 8233
)

// fixedPorts are the well-known ports of PortsFixed.
var fixedPorts = map[string]int{
	portTemporal:   fixedTemporalPort,
	portTemporalUI: fixedTemporalUIPort,
	portExternal:   fixedExternalPort,
	portInternalA1: fixedInternalPort,
}

// ErrPortInUse reports that a port the stack needs is taken by another process.
var ErrPortInUse = errors.New("port already in use")

// assignPorts returns a port for each name. Ports saved in path by an earlier
// run of the same state directory are reused (the Postgres standby and Kafka
// remember their peers' ports), well-known ports are used in PortsFixed mode,
// and the rest are picked free. The result is saved back to path.
func assignPorts(path string, names []string, mode PortMode) (map[string]int, error) {
	saved := map[string]int{}
	if env, err := ReadEnvFile(path); err == nil {
		for k, v := range env {
			if p, err := strconv.Atoi(v); err == nil {
				saved[k] = p
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}

	ports := map[string]int{}
	taken := map[int]bool{}
	for _, name := range names {
		want, fixed := fixedPorts[name]
		if mode != PortsFixed {
			want, fixed = 0, false
		}
		if p, ok := saved[name]; ok && !fixed {
			want = p
		}
		if want == 0 {
			continue
		}
		if err := checkFree(want); err != nil {
			hint := "stop whatever holds it, or start this stack with -ports auto"
			if !fixed {
				hint = "this state directory remembers it from an earlier run; stop whatever holds it, or start afresh with -fresh"
			}
			return nil, fmt.Errorf("%s needs 127.0.0.1:%d: %w (%s)", name, want, ErrPortInUse, hint)
		}
		ports[name] = want
		taken[want] = true
	}
	for _, name := range names {
		if _, ok := ports[name]; ok {
			continue
		}
		p, err := freePort(taken)
		if err != nil {
			return nil, fmt.Errorf("pick a port for %s: %w", name, err)
		}
		ports[name] = p
		taken[p] = true
	}

	env := Env{}
	for k, v := range ports {
		env[k] = strconv.Itoa(v)
	}
	if err := writeEnvFile(path, env); err != nil {
		return nil, err
	}
	return ports, nil
}

// checkFree reports whether a TCP port on 127.0.0.1 can be listened on.
func checkFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return l.Close()
}

// freePort returns a free port on 127.0.0.1 that is not in taken, chosen at
// random below the kernel's ephemeral range. A port from listen(":0") would be
// an ephemeral one, which any outgoing connection (a Kafka client, a Postgres
// session) may take as its local port before the server gets to bind it;
// ports below that range are only ever taken by an explicit bind.
func freePort(taken map[int]bool) (int, error) {
	lo, hi := staticPortRange()
	for range 500 {
		p := lo + rand.IntN(hi-lo)
		if taken[p] || documentedPort(p) || checkFree(p) != nil {
			continue
		}
		return p, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d", lo, hi-1)
}

// documentedPort reports whether p is one a person opens on a `make run`
// stack; an auto-port stack must not take it from them.
func documentedPort(p int) bool {
	for _, f := range fixedPorts {
		if p == f {
			return true
		}
	}
	return false
}

// staticPortRange is [lo, hi): from 10000 up to the start of the kernel's
// ephemeral port range (net.ipv4.ip_local_port_range, 32768 by default).
func staticPortRange() (lo, hi int) {
	lo, hi = 10000, 32768
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	if f := strings.Fields(string(data)); len(f) == 2 {
		if start, err := strconv.Atoi(f[0]); err == nil && start > lo+1000 {
			hi = start
		}
	}
	return lo, hi
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
