// Package browsertest runs Debian's real Chromium, headless, from Go tests,
// driven with chromedp: one browser per test, any number of live tabs in it,
// waits on conditions with deadlines (never sleeps), the page's console errors
// and uncaught exceptions turned into test failures, and a screenshot, the DOM
// and the console of every tab saved when a test fails.
//
//	b := browsertest.New(t)
//	alice, bob := b.NewTab(t), b.NewTab(t)
//	alice.Navigate(srv.URL)
//	bob.Navigate(srv.URL)
//	alice.Click(browsertest.TestID("new-chat"))
//	bob.WaitVisible(browsertest.TestID("chat-item"))
//
// The helpers of Tab fail the test with t.Fatal, so call them from the test's
// own goroutine. To drive tabs from several goroutines at once, run chromedp
// actions on Tab.Ctx (one goroutine per tab) and check their errors yourself.
package browsertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"
)

// Defaults of the options.
const (
	// DefaultTimeout bounds one step of a test (a navigation, a click, a wait).
	// It is generous because a loaded 2-core CI machine can stall a renderer
	// for seconds; a passing test never waits for it.
	DefaultTimeout = 15 * time.Second
	// startTimeout bounds the start of the browser.
	startTimeout = 30 * time.Second
	// closeTimeout bounds the graceful close of the browser in t.Cleanup.
	closeTimeout = 10 * time.Second
	// EnvArtifacts names an environment variable with a directory where the
	// files of failed tests go; without it each failed test gets a fresh
	// directory under os.TempDir(). The path is printed in the test log.
	EnvArtifacts = "BROWSERTEST_ARTIFACTS"
)

// Option changes how New starts the browser.
type Option func(*config)

type config struct {
	timeout       time.Duration
	width, height int
	artifactsDir  string
	logf          bool
}

// WithTimeout sets how long one step of a Tab may take (default DefaultTimeout).
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithWindowSize sets the size of each tab's window in CSS pixels (default
// 1280×800).
func WithWindowSize(width, height int) Option {
	return func(c *config) { c.width, c.height = width, height }
}

// WithArtifactsDir sets the directory where the files of a failed test go
// (default $BROWSERTEST_ARTIFACTS, else a fresh directory under os.TempDir()).
func WithArtifactsDir(dir string) Option { return func(c *config) { c.artifactsDir = dir } }

// WithProtocolLog logs chromedp's own errors and notices (a protocol message
// it could not decode, a target it lost) through t.Logf. Off by default: it
// is for debugging the harness, not the page.
func WithProtocolLog() Option { return func(c *config) { c.logf = true } }

// Browser is one Chromium process started for one test. It is closed, and its
// profile removed, in t.Cleanup.
type Browser struct {
	cfg    config
	ctx    context.Context // chromedp context of the browser's first tab
	output *syncBuffer     // Chromium's stdout and stderr

	mu       sync.Mutex
	tabs     int
	failDirs map[string]string // test name → artifacts directory of this browser
}

// New starts a fresh Chromium for the test t, with its own profile in
// t.TempDir(). If Chromium is missing, the test fails with a message naming
// InstallCommand. The browser is closed in t.Cleanup.
func New(t testing.TB, opts ...Option) *Browser {
	t.Helper()
	cfg := config{timeout: DefaultTimeout, width: 1280, height: 800, artifactsDir: os.Getenv(EnvArtifacts)}
	for _, o := range opts {
		o(&cfg)
	}
	path, err := FindChromium()
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	// TempDir first: its removal must run after the browser is gone, and
	// cleanups run last-registered first.
	profile := t.TempDir()
	b := &Browser{cfg: cfg, output: &syncBuffer{}, failDirs: map[string]string{}}

	allocOpts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.CombinedOutput(b.output),
	}
	for _, f := range chromiumFlags(cfg.width, cfg.height) {
		allocOpts = append(allocOpts, chromedp.Flag(f[0].(string), f[1]))
	}
	// Not t.Context(): it is canceled before cleanups run, and the cleanups
	// still need the browser for screenshots.
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), allocOpts...)
	ctxOpts := []chromedp.ContextOption{chromedp.WithErrorf(func(string, ...any) {})}
	if cfg.logf {
		ctxOpts = []chromedp.ContextOption{chromedp.WithErrorf(t.Logf), chromedp.WithLogf(t.Logf)}
	}
	ctx, cancel := chromedp.NewContext(allocCtx, ctxOpts...)
	b.ctx = ctx
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, closeTimeout)
		err := chromedp.Cancel(cctx)
		ccancel()
		cancel()
		allocCancel() // waits for the process to exit
		if n := killLeftovers(profile, 2*time.Second); n > 0 {
			t.Logf("browsertest: killed %d Chromium processes left after the browser exited", n)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("browsertest: closing Chromium: %v", err)
		}
		if t.Failed() {
			t.Logf("browsertest: Chromium output (tail):\n%s", tail(b.output.String(), 40))
		}
	})

	// The first run starts the process, which lives as long as the context
	// of that run: bound it from outside, not with a deadline on ctx.
	if err := firstRun(ctx, startTimeout); err != nil {
		t.Fatalf("browsertest: start %s: %v\nChromium output:\n%s", path, err, tail(b.output.String(), 40))
	}
	return b
}

// Version returns the browser's product and version, as
// "Chrome/156.0.8078.108" (Debian's Chromium calls itself Chrome).
func (b *Browser) Version(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.timeout)
	defer cancel()
	v, err := chromedp.CallBrowser(ctx, browser.GetVersion, cdp.Empty{})
	if err != nil {
		t.Fatalf("browsertest: version: %v", err)
	}
	return v.Product
}

// firstRun runs chromedp's first (empty) action on ctx, which starts the
// browser or attaches the tab, and gives up after d. The run keeps going after
// a timeout until ctx is canceled in t.Cleanup.
func firstRun(ctx context.Context, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- chromedp.Do(ctx) }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		return fmt.Errorf("no answer within %s", d)
	}
}

// artifactsDir returns the directory for the files of a failed test, making
// it on first use.
func (b *Browser) artifactsDir(t testing.TB) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d, ok := b.failDirs[t.Name()]; ok {
		return d, nil
	}
	name := strings.NewReplacer("/", "_", " ", "_", ":", "_").Replace(t.Name())
	var dir string
	var err error
	if b.cfg.artifactsDir != "" {
		dir = filepath.Join(b.cfg.artifactsDir, name)
		err = os.MkdirAll(dir, 0o755)
	} else {
		dir, err = os.MkdirTemp("", "browsertest-"+name+"-")
	}
	if err != nil {
		return "", fmt.Errorf("artifacts directory: %w", err)
	}
	b.failDirs[t.Name()] = dir
	return dir, nil
}

// syncBuffer is a bytes.Buffer safe for Chromium's output goroutine and the
// test's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// tail returns the last n lines of Chromium's output s, without its
// complaints that the machine has no D-Bus (harmless, and dozens per start).
func tail(s string, n int) string {
	var lines []string
	for l := range strings.SplitSeq(strings.TrimRight(s, "\n"), "\n") {
		if !strings.Contains(l, ":ERROR:dbus/") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
