package stacktest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// BuildCommand builds the Go command in package directory pkg (relative to
// the test's package, "." for itself) into a new temporary directory, for a
// TestMain whose tests run it as processes. The caller removes dir.
func BuildCommand(pkg, name string) (bin, dir string, err error) {
	dir, err = os.MkdirTemp("", name+"-test")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, name)
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("build %s: %w", pkg, err)
	}
	return bin, dir, nil
}

// MainWithCommand is a TestMain that builds the Go command in package
// directory pkg (see BuildCommand), sets *bin to its path, runs the tests
// and removes the binary.
func MainWithCommand(m *testing.M, pkg, name string, bin *string) {
	path, dir, err := BuildCommand(pkg, name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = path
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Procs runs one test's processes of a binary, each under a name, its
// output in a log file of its own. When the test ends they are all killed,
// and if it failed the tail of every log is printed.
type Procs struct {
	t      testing.TB
	bin    string
	logDir string

	mu    sync.Mutex
	procs map[string]*Proc
}

// Proc is one running (or exited) process.
type Proc struct {
	Name string
	// Log is the path of the file that gets its stdout and stderr.
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// NewProcs returns a runner of bin's processes for t.
func NewProcs(t testing.TB, bin string) *Procs {
	ps := &Procs{t: t, bin: bin, logDir: t.TempDir(), procs: map[string]*Proc{}}
	t.Cleanup(ps.stopAll)
	return ps
}

// Start starts a process named name with the test's environment plus env
// (KEY=VALUE), appending to its log if name ran before. It dies with the
// test binary.
func (ps *Procs) Start(name string, env ...string) *Proc {
	ps.t.Helper()
	log := filepath.Join(ps.logDir, name+".log")
	logf, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		ps.t.Fatal(err)
	}
	cmd := exec.Command(ps.bin)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		ps.t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, Log: log, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.procs[name] = p
	ps.mu.Unlock()
	return p
}

// Get returns the process last started as name.
func (ps *Procs) Get(name string) *Proc {
	ps.t.Helper()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p, ok := ps.procs[name]
	if !ok {
		ps.t.Fatalf("no process %s", name)
	}
	return p
}

// Kill sends SIGKILL (which ends a SIGSTOPped process too) and waits for
// the process to die.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to %s: %w", sig, p.Name, err)
	}
	return nil
}

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 if a signal ended it), or an error if it is still running.
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (ps *Procs) stopAll() {
	ps.mu.Lock()
	procs := ps.procs
	ps.procs = map[string]*Proc{}
	ps.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	if ps.t.Failed() {
		ps.DumpLogs()
	}
}

// DumpLogs prints the last 40 lines of every process's log.
func (ps *Procs) DumpLogs() {
	files, _ := filepath.Glob(filepath.Join(ps.logDir, "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		lines = lines[max(0, len(lines)-40):]
		ps.t.Logf("--- last lines of %s:\n%s", filepath.Base(f), strings.Join(lines, "\n"))
	}
}

// FreeAddr returns a loopback address with a port free right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ScrapeMetrics reads the Prometheus metrics served at url, by family name.
func ScrapeMetrics(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("metrics at %s: %w", url, err)
	}
	return mfs, nil
}
