package devstack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
)

// temporalNamespace is the namespace the dev server registers at start.
const temporalNamespace = "default"

func (s *Stack) temporal() *component {
	port, uiPort := s.ports[portTemporal], s.ports[portTemporalUI]
	var bin string
	return &component{
		name: Temporal,
		addr: fmt.Sprintf("%s, UI http://localhost:%d", hostPort(port), uiPort),
		prepare: func(ctx context.Context) error {
			var err error
			bin, err = s.buildTemporal(ctx)
			if err != nil {
				return err
			}
			return mkdirs(s.dataDir(Temporal))
		},
		spec: func() procSpec {
			return s.baseSpec(Temporal, bin,
				"-ip", "127.0.0.1",
				"-port", strconv.Itoa(port),
				"-ui-port", strconv.Itoa(uiPort),
				"-db-file", filepath.Join(s.dataDir(Temporal), "temporal.db"),
				"-namespace", temporalNamespace,
				"-log-level", "warn")
		},
		ready: func(ctx context.Context) error {
			if err := temporalPing(ctx, hostPort(port)); err != nil {
				return err
			}
			return httpOK(ctx, fmt.Sprintf("http://%s/", hostPort(uiPort)))
		},
	}
}

// temporalPing checks that the frontend serves the stack's namespace.
func temporalPing(ctx context.Context, addr string) error {
	c, err := client.DialContext(ctx, client.Options{
		HostPort:  addr,
		Namespace: temporalNamespace,
		Logger:    tlog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: temporalNamespace})
	return err
}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// buildTemporal builds deploy/temporal (its own Go module) into the cache,
// keyed by a hash of its sources, so a second start builds nothing.
func (s *Stack) buildTemporal(ctx context.Context) (string, error) {
	src := filepath.Join(s.opts.RepoRoot, "deploy", "temporal")
	sum, err := hashSources(src)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", src, err)
	}
	bin := filepath.Join(s.opts.CacheDir, "bin", "temporal-dev-"+sum)
	if isExecutable(bin) == nil {
		return bin, nil
	}
	if err := mkdirs(filepath.Dir(bin)); err != nil {
		return "", err
	}
	s.progress.line(Temporal, "building", "temporal-dev from deploy/temporal (first time only; ~3 min on 2 cores)")
	began := time.Now()
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	if err := s.runLogged(ctx, Temporal, src, nil, nil, s.tools.goBin, "build", "-o", tmp, "."); err != nil {
		return "", fmt.Errorf("build temporal-dev: %w", err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("install temporal-dev: %w", err)
	}
	s.progress.line(Temporal, "built", fmt.Sprintf("in %s", time.Since(began).Round(time.Second)))
	return bin, nil
}

// hashSources hashes the Go module in dir: go.mod, go.sum and its .go files.
func hashSources(dir string) (string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (filepath.Ext(path) == ".go" || d.Name() == "go.mod" || d.Name() == "go.sum") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	slices.Sort(files)
	h := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(dir, f)
		fmt.Fprintf(h, "%s %d\n", rel, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
