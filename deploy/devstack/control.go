package devstack

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Control actions on one component.
const (
	ActionKill    = "kill"    // SIGKILL the process group
	ActionStop    = "stop"    // SIGTERM, SIGKILL after a grace period
	ActionStart   = "start"   // start a stopped component and wait until ready
	ActionRestart = "restart" // stop, then start
)

// controlTimeout bounds one control request; starting Kafka or Temporal takes seconds.
const controlTimeout = 5 * time.Minute

// ComponentStatus is one row of GET /v1/components.
type ComponentStatus struct {
	Name    Name `json:"name"`
	Running bool `json:"running"`
	Pid     int  `json:"pid,omitempty"`
}

// startControl serves the control API on loopback, for tests and the CLI.
func (s *Stack) startControl() error {
	l, err := net.Listen("tcp", hostPort(s.ports[portControl]))
	if err != nil {
		return fmt.Errorf("control API: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/components", func(w http.ResponseWriter, r *http.Request) {
		var out []ComponentStatus
		for _, n := range s.order {
			st := ComponentStatus{Name: n}
			if pid, err := s.Pid(n); err == nil {
				st.Running, st.Pid = true, pid
			}
			out = append(out, st)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /v1/components/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		n, action := Name(r.PathValue("name")), r.PathValue("action")
		var err error
		switch action {
		case ActionKill:
			err = s.Kill(r.Context(), n)
		case ActionStop:
			err = s.Stop(r.Context(), n)
		case ActionStart:
			err = s.StartComponent(r.Context(), n)
		case ActionRestart:
			err = s.Restart(r.Context(), n)
		default:
			http.Error(w, fmt.Sprintf("unknown action %q: use kill, stop, start or restart", action), http.StatusBadRequest)
			return
		}
		controlReply(w, err)
	})
	mux.HandleFunc("POST /v1/promote-standby", func(w http.ResponseWriter, r *http.Request) {
		controlReply(w, s.PromoteStandby(r.Context()))
	})
	mux.HandleFunc("POST /v1/dump-goroutines", s.serveDump)
	s.control = &http.Server{
		Handler:           s.authorize(mux),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      controlTimeout + 10*time.Second,
	}
	go func() { _ = s.control.Serve(l) }()
	return nil
}

func controlReply(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, ErrUnknownComponent):
		http.Error(w, err.Error(), http.StatusNotFound)
	default:
		http.Error(w, err.Error(), http.StatusConflict)
	}
}

func (s *Stack) authorize(next http.Handler) http.Handler {
	want := []byte("Bearer " + s.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			http.Error(w, "missing or wrong bearer token (DEVSTACK_CONTROL_TOKEN in stack.env)", http.StatusUnauthorized)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), controlTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Client controls a stack run by another process (the launcher) through its
// control API, and reads its stack.env. Integration tests use it to reach the
// stack `make test` started once for all packages.
type Client struct {
	env  Env
	http *http.Client
}

// Connect reads <dir>/stack.env of a running stack.
func Connect(dir string) (*Client, error) {
	env, err := ReadEnvFile(dir + "/stack.env")
	if err != nil {
		return nil, fmt.Errorf("no running stack in %s (start one with `make run`, or run tests with `make test`): %w", dir, err)
	}
	return &Client{env: env, http: &http.Client{Timeout: controlTimeout + 30*time.Second}}, nil
}

// Env returns the stack's addresses and DSNs.
func (c *Client) Env() Env { return c.env }

// Dir returns the stack's state directory.
func (c *Client) Dir() string { return c.env[EnvDir] }

// Kill sends SIGKILL to a component, as a crash would.
func (c *Client) Kill(ctx context.Context, n Name) error {
	return c.post(ctx, componentPath(n, ActionKill))
}

// Stop shuts a component down gracefully.
func (c *Client) Stop(ctx context.Context, n Name) error {
	return c.post(ctx, componentPath(n, ActionStop))
}

// StartComponent starts a stopped component and waits until it is ready.
func (c *Client) StartComponent(ctx context.Context, n Name) error {
	return c.post(ctx, componentPath(n, ActionStart))
}

// Restart stops a component gracefully and starts it again.
func (c *Client) Restart(ctx context.Context, n Name) error {
	return c.post(ctx, componentPath(n, ActionRestart))
}

// PromoteStandby promotes the Postgres standby to primary.
func (c *Client) PromoteStandby(ctx context.Context) error { return c.post(ctx, "/v1/promote-standby") }

// Status lists the stack's components and their pids.
func (c *Client) Status(ctx context.Context) ([]ComponentStatus, error) {
	var out []ComponentStatus
	resp, err := c.do(ctx, http.MethodGet, "/v1/components")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	return out, nil
}

func componentPath(n Name, action string) string {
	return "/v1/components/" + string(n) + "/" + action
}

func (c *Client) post(ctx context.Context, path string) error {
	resp, err := c.do(ctx, http.MethodPost, path)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func (c *Client) do(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.env[EnvControlURL]+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.env[EnvControlToken])
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("devstack control %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("devstack control %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return resp, nil
}
