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
)

// Keys of stack.env for our services.
const (
	EnvExternalURL        = "EXTERNAL_URL"         // base URL of the external service
	EnvExternalAdminToken = "EXTERNAL_ADMIN_TOKEN" // bearer token of its /admin/faults
)

// The UIs' documented ports (as in the original's NodePorts).
const (
	fixedExternalPort = 30001
	fixedInternalPort = 30002 // the internal app's, reserved until it exists
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
		After:    []Name{PGPrimary},
		ReadyURL: "http://" + hostPort(port) + "/readyz",
	}, nil)
	c.addr = "http://localhost:" + strconv.Itoa(port)
	return c
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
