package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"
)

// dumpTimeout bounds fetching one service's goroutine dump.
const dumpTimeout = 10 * time.Second

// DumpGoroutines writes a goroutine dump of every running service (from its
// /debug/pprof/goroutine?debug=2, which our services serve to loopback
// clients) next to its log, as logs/<name>.goroutines-<time>.txt, and
// returns the files written. A service that does not answer is reported in
// the error; the others are still dumped. Unlike SIGQUIT, the process lives
// on.
func (s *Stack) DumpGoroutines(ctx context.Context) ([]string, error) {
	stamp := time.Now().Format("150405.000")
	var (
		mu    sync.Mutex
		paths []string
		errs  []error
		wg    sync.WaitGroup
	)
	for _, n := range s.order {
		c := s.comps[n]
		if !c.service || c.liveURL == "" {
			continue
		}
		if _, err := s.Pid(n); err != nil {
			continue // not running
		}
		wg.Go(func() {
			path := s.path("logs", fmt.Sprintf("%s.goroutines-%s.txt", n, stamp))
			err := dumpGoroutines(ctx, c.liveURL, path)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
				return
			}
			paths = append(paths, path)
		})
	}
	wg.Wait()
	return paths, errors.Join(errs...)
}

// dumpGoroutines fetches the goroutine dump of the service whose liveness
// URL is liveURL into path.
func dumpGoroutines(ctx context.Context, liveURL, path string) error {
	u, err := url.Parse(liveURL)
	if err != nil {
		return err
	}
	u.Path, u.RawQuery = "/debug/pprof/goroutine", "debug=2"
	ctx, cancel := context.WithTimeout(ctx, dumpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// DumpGoroutines asks the launcher for a goroutine dump of every running
// service (see Stack.DumpGoroutines) and returns the files written.
func (c *Client) DumpGoroutines(ctx context.Context) ([]string, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/dump-goroutines")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out dumpReply
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode the dump's reply: %w", err)
	}
	if out.Error != "" {
		return out.Paths, errors.New(out.Error)
	}
	return out.Paths, nil
}

// dumpReply is the answer of POST /v1/dump-goroutines.
type dumpReply struct {
	Paths []string `json:"paths"`
	Error string   `json:"error,omitempty"`
}

// serveDump answers POST /v1/dump-goroutines.
func (s *Stack) serveDump(w http.ResponseWriter, r *http.Request) {
	paths, err := s.DumpGoroutines(r.Context())
	out := dumpReply{Paths: paths}
	if err != nil {
		out.Error = err.Error()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
