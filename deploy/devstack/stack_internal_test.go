package devstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestParseProfile(t *testing.T) {
	tests := []struct {
		in      string
		want    Profile
		wantErr string
	}{
		{in: "single", want: ProfileSingle},
		{in: "geo", want: ProfileGeo},
		{in: "GEO", wantErr: `unknown profile "GEO": use one of geo, single`},
		{in: "", wantErr: `unknown profile ""`},
	}
	for _, tc := range tests {
		got, err := ParseProfile(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseProfile(%q) error = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseProfile(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestGeoProfileRunsBothRegions(t *testing.T) {
	for _, n := range []Name{PGPrimary, PGStandby, PGExternal, Redis, KafkaA, KafkaB, MirrorMaker, Temporal} {
		if !ProfileGeo.Has(n) {
			t.Errorf("geo lacks %s", n)
		}
	}
	for _, n := range []Name{PGStandby, KafkaB, MirrorMaker} {
		if ProfileSingle.Has(n) {
			t.Errorf("single runs %s", n)
		}
	}
}

func TestAssignPortsReusesSavedPortsAndRejectsBusyOnes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ports.env")
	first, err := assignPorts(path, []string{portRedis, portKafkaA}, PortsAuto)
	if err != nil {
		t.Fatal(err)
	}
	if first[portRedis] == first[portKafkaA] || first[portRedis] == 0 {
		t.Fatalf("ports not distinct and non-zero: %v", first)
	}
	second, err := assignPorts(path, []string{portRedis, portKafkaA}, PortsAuto)
	if err != nil {
		t.Fatal(err)
	}
	if second[portRedis] != first[portRedis] || second[portKafkaA] != first[portKafkaA] {
		t.Fatalf("ports changed between runs: %v then %v", first, second)
	}

	l, err := net.Listen("tcp", hostPort(first[portRedis]))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = assignPorts(path, []string{portRedis}, PortsAuto)
	if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), "redis needs 127.0.0.1:"+strconv.Itoa(first[portRedis])) {
		t.Fatalf("busy saved port: got %v", err)
	}
}

func TestPortModes(t *testing.T) {
	names := []string{portTemporal, portTemporalUI, portRedis}
	fixed, err := assignPorts(filepath.Join(t.TempDir(), "ports.env"), names, PortsFixed)
	if err != nil && !errors.Is(err, ErrPortInUse) { // 7233/8233 may be held by a `make run` stack
		t.Fatal(err)
	}
	if err == nil && (fixed[portTemporal] != 7233 || fixed[portTemporalUI] != 8233) {
		t.Errorf("fixed mode: %v, want Temporal on 7233 and its UI on 8233", fixed)
	}
	auto, err := assignPorts(filepath.Join(t.TempDir(), "ports.env"), names, PortsAuto)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if p := auto[n]; p == 7233 || p == 8233 || p == 0 {
			t.Errorf("auto mode gave %s port %d, want a free non-documented port", n, p)
		}
	}
}

func TestLockDirRefusesASecondLauncher(t *testing.T) {
	dir := t.TempDir()
	first, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDir(dir)
	if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("second lock: got %v, want ErrAlreadyRunning naming pid %d", err, os.Getpid())
	}
	first.Close()
	again, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again.Close()
}

func TestFindToolsNamesEveryMissingPrerequisite(t *testing.T) {
	t.Setenv(EnvJava, "/nonexistent/java")
	t.Setenv(EnvPGBinDir, "/nonexistent/pg")
	_, err := findTools(ProfileGeo)
	if !errors.Is(err, ErrMissingPrerequisite) {
		t.Fatalf("got %v, want ErrMissingPrerequisite", err)
	}
	for _, want := range []string{"java", "apt-get install -y openjdk-17-jre-headless", "postgres", "apt-get install -y postgresql", "/nonexistent/pg"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestEnvFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stack.env")
	in := Env{EnvRedisAddr: "127.0.0.1:1", EnvPGInternalDSN: "postgres://u:p@127.0.0.1:1,127.0.0.1:2/internal?a=b&c=d"}
	if err := writeEnvFile(path, in); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("stack.env mode %v, want 0600 (it holds passwords)", fi.Mode().Perm())
	}
	out, err := ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) || out[EnvPGInternalDSN] != in[EnvPGInternalDSN] || out[EnvRedisAddr] != in[EnvRedisAddr] {
		t.Fatalf("round trip: got %v, want %v", out, in)
	}
}

func TestMultiHostDSNTargetsTheWritableServer(t *testing.T) {
	s := &Stack{}
	got := s.pgDSN("chatpoc", "p@ss/word", "internal", 5001, 5002)
	want := "postgres://chatpoc:p%40ss%2Fword@127.0.0.1:5001,127.0.0.1:5002/internal?sslmode=disable&target_session_attrs=read-write"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// lockedBuffer collects progress output that goroutines write while the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serviceStack is a Stack without infrastructure running one service, `sleep`.
func serviceStack(t *testing.T, noRestart bool) (*Stack, *lockedBuffer) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	opts := Options{NoRestart: noRestart, Progress: out, Logger: slog.New(slog.DiscardHandler)}
	s := startServiceStack(t, opts, Service{Name: "svc", Path: sleep, Args: []string{"300"}})
	return s, out
}

// startServiceStack is a Stack without infrastructure running svc, with
// opts's restart policy, progress and logger, and testLiveness's timing. It
// returns once svc is ready, and closes the stack when the test ends.
func startServiceStack(t *testing.T, opts Options, svc Service) *Stack {
	t.Helper()
	opts.ReadyTimeout = 10 * time.Second
	s := &Stack{
		opts:     opts,
		dir:      t.TempDir(),
		ports:    map[string]int{},
		comps:    map[Name]*component{},
		procs:    map[Name]*proc{},
		stopping: map[Name]bool{},
		backoff:  map[Name]time.Duration{},
		endLive:  map[Name]context.CancelFunc{},
		liveness: testLiveness,
		progress: &progress{w: opts.Progress},
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	c := s.newService(svc, nil)
	s.comps[c.name], s.order = c, []Name{c.name}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	if err := s.startComponent(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return s
}

// crash kills the service behind the launcher's back, as the OOM killer would.
func crash(t *testing.T, s *Stack) int {
	t.Helper()
	pid, err := s.Pid("svc")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestServiceIsRestartedAfterACrash(t *testing.T) {
	s, out := serviceStack(t, false)
	old := crash(t, s)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pid, err := s.Pid("svc"); err == nil && pid != old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not restarted within 10s; progress:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{"EXITED", "restarting", "in 500ms"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(s.pidPath("svc")); err != nil {
		t.Errorf("pid file of the restarted service: %v", err)
	}
}

func TestServiceStaysDownWithoutRestartPolicy(t *testing.T) {
	s, out := serviceStack(t, true)
	crash(t, s)
	s.mu.Lock()
	p := s.procs["svc"]
	s.mu.Unlock()
	<-p.wait()
	// Nothing to wait on for an event that must not happen: give the launcher
	// four times the first restart delay to (wrongly) restart it.
	time.Sleep(4 * restartBackoffMin)
	if pid, err := s.Pid("svc"); err == nil {
		t.Fatalf("service restarted (pid %d) although NoRestart is set; progress:\n%s", pid, out)
	}
	if strings.Contains(out.String(), "restarting") {
		t.Fatalf("progress says restarting:\n%s", out)
	}
}

func TestKilledOnPurposeServiceIsNotRestarted(t *testing.T) {
	s, out := serviceStack(t, false)
	if err := s.Kill(context.Background(), "svc"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * restartBackoffMin) // as above: waiting for something that must not happen
	if pid, err := s.Pid("svc"); err == nil {
		t.Fatalf("service killed through the API was restarted (pid %d)", pid)
	}
	if err := s.StartComponent(context.Background(), "svc"); err != nil {
		t.Fatalf("start after kill: %v\n%s", err, out)
	}
	if _, err := s.Pid("svc"); err != nil {
		t.Fatal(err)
	}
}

// testLiveness probes every 100 ms instead of every 2 s, so a test sees a
// service declared unhealthy in a fraction of a second; the timeout stays
// generous because the fake services run under -race on two cores.
var testLiveness = livenessPolicy{period: 100 * time.Millisecond, timeout: time.Second, failures: 3, grace: 3 * time.Second}

// The fake service: the test binary itself, started with fakeServiceEnv set
// to the address to serve, so it starts in milliseconds without a build.
const (
	fakeServiceEnv = "DEVSTACK_TEST_FAKE_SERVICE_ADDR"
	// fakeStalledFile in the fake's working directory (its data directory)
	// makes its /healthz answer 503, as a service whose watchdog saw it stall.
	fakeStalledFile = "stalled"
	// fakeStalledBody is that answer; only its first line belongs in the progress.
	fakeStalledBody = "stalled: no progress for 3m0s\ngoroutine dump follows"
	// fakeProbeLine is what the fake logs for every /healthz request, so a
	// test can count the probes it answered.
	fakeProbeLine = "fake: GET /healthz"
	// fakeDrain is how long the fake takes to exit after SIGTERM, answering
	// /healthz with 503 meanwhile: several times what testLiveness needs to
	// give up, so a probe that outlived a Stop would be seen.
	fakeDrain = time.Second
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(fakeServiceEnv); addr != "" {
		os.Exit(fakeService(addr))
	}
	os.Exit(m.Run())
}

// fakeService is one of our services in miniature: /readyz and /healthz on
// addr, and a slow graceful shutdown on SIGTERM.
func fakeService(addr string) int {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var draining atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Println(fakeProbeLine)
		if draining.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		if _, err := os.Stat(fakeStalledFile); err == nil {
			http.Error(w, fakeStalledBody, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(l) }()
	<-term
	draining.Store(true)
	time.Sleep(fakeDrain) // the slow shutdown this fake is for
	return 0
}

// fakeServiceStack runs one fake service "svc" with a liveness probe; logs
// collects what the launcher logs through Options.Logger.
func fakeServiceStack(t *testing.T, noRestart bool) (s *Stack, progress, logs *lockedBuffer) {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	port, err := freePort(nil)
	if err != nil {
		t.Fatal(err)
	}
	progress, logs = &lockedBuffer{}, &lockedBuffer{}
	opts := Options{NoRestart: noRestart, Progress: progress, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	base := "http://" + hostPort(port)
	s = startServiceStack(t, opts, Service{
		Name:     "svc",
		Path:     bin,
		Env:      []string{fakeServiceEnv + "=" + hostPort(port)},
		ReadyURL: base + "/readyz",
		LiveURL:  base + "/healthz",
	})
	return s, progress, logs
}

// waitFor polls cond until it holds, failing the test with the progress
// output after a deadline.
func waitFor(t *testing.T, progress *lockedBuffer, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 15s; progress:\n%s", what, progress)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setStalled makes the fake's /healthz fail (or answer 200 again).
func setStalled(t *testing.T, s *Stack, stalled bool) {
	t.Helper()
	path := filepath.Join(s.dataDir("svc"), fakeStalledFile)
	var err error
	if stalled {
		err = os.WriteFile(path, nil, 0o644)
	} else {
		err = os.Remove(path)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// probesAnswered counts the /healthz requests the fake has answered, over
// all its processes.
func probesAnswered(t *testing.T, s *Stack) int {
	t.Helper()
	data, err := os.ReadFile(s.logPath("svc"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), fakeProbeLine)
}

func mustPid(t *testing.T, s *Stack) int {
	t.Helper()
	pid, err := s.Pid("svc")
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func hasUnhealthy(progress *lockedBuffer) func() bool {
	return func() bool { return strings.Contains(progress.String(), "UNHEALTHY") }
}

func restartedFrom(s *Stack, old int) func() bool {
	return func() bool {
		pid, err := s.Pid("svc")
		return err == nil && pid != old
	}
}

func TestUnhealthyServiceIsTerminatedAndRestarted(t *testing.T) {
	t.Parallel()
	s, progress, logs := fakeServiceStack(t, false)
	old := mustPid(t, s)
	setStalled(t, s, true)
	waitFor(t, progress, "UNHEALTHY", hasUnhealthy(progress))
	setStalled(t, s, false) // so that the restarted process is healthy
	waitFor(t, progress, "restart", restartedFrom(s, old))
	waitFor(t, progress, "ready after the restart", func() bool { return strings.Count(progress.String(), "ready in") == 2 })

	out := progress.String()
	at := 0
	for _, want := range []string{"UNHEALTHY", "EXITED", "restarting", "ready in"} {
		i := strings.Index(out[at:], want)
		if i < 0 {
			t.Fatalf("progress lacks %q after UNHEALTHY (want UNHEALTHY, EXITED, restarting, ready in order):\n%s", want, out)
		}
		at += i
	}
	for _, want := range []string{
		"3 liveness probes failed",
		"503 Service Unavailable: stalled: no progress for 3m0s",
		fmt.Sprintf("terminating pid %d", old),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "goroutine dump follows") {
		t.Errorf("progress shows more than the first line of the body:\n%s", out)
	}
	if ProcessAlive(old) {
		t.Errorf("unhealthy pid %d still alive", old)
	}
	if l := logs.String(); !strings.Contains(l, "service unhealthy") || !strings.Contains(l, "component=svc") {
		t.Errorf("logger was not told:\n%s", l)
	}
}

func TestHealthyServiceIsNeverKilledByItsLivenessProbe(t *testing.T) {
	t.Parallel()
	s, progress, _ := fakeServiceStack(t, false)
	old := mustPid(t, s)
	// Observation window: three times the answered probes that would make a
	// failing service unhealthy.
	waitFor(t, progress, "probes", func() bool { return probesAnswered(t, s) >= 3*testLiveness.failures })
	if pid := mustPid(t, s); pid != old {
		t.Fatalf("healthy service restarted (pid %d, then %d); progress:\n%s", old, pid, progress)
	}
	for _, bad := range []string{"UNHEALTHY", "EXITED"} {
		if strings.Contains(progress.String(), bad) {
			t.Fatalf("progress says %s about a healthy service:\n%s", bad, progress)
		}
	}
}

func TestUnhealthyServiceIsLeftRunningWithoutRestartPolicy(t *testing.T) {
	t.Parallel()
	s, progress, _ := fakeServiceStack(t, true)
	old := mustPid(t, s)
	setStalled(t, s, true)
	waitFor(t, progress, "UNHEALTHY", hasUnhealthy(progress))
	// Observation window: as many more failed probes as it took to report
	// it, in which a kill or a second report would have come.
	after := probesAnswered(t, s)
	waitFor(t, progress, "further probes", func() bool {
		return probesAnswered(t, s) >= after+testLiveness.failures || !ProcessAlive(old)
	})
	if !ProcessAlive(old) {
		t.Fatalf("unhealthy pid %d was killed although NoRestart is set; progress:\n%s", old, progress)
	}
	out := progress.String()
	if n := strings.Count(out, "UNHEALTHY"); n != 1 || !strings.Contains(out, "not killed") || strings.Contains(out, "EXITED") {
		t.Fatalf("want one UNHEALTHY saying not killed, no EXITED; progress:\n%s", out)
	}
	setStalled(t, s, false)
	waitFor(t, progress, "recovery", func() bool { return strings.Contains(progress.String(), "healthy again") })
}

func TestLivenessProbeEndsWithAStopOnPurposeAndStartsAfreshAfterAStart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		end  func(s *Stack, ctx context.Context, n Name) error
	}{
		{name: "stop", end: (*Stack).Stop}, // the fake answers 503 for fakeDrain before it exits
		{name: "kill", end: (*Stack).Kill},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, progress, _ := fakeServiceStack(t, false)
			if err := tc.end(s, context.Background(), "svc"); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(progress.String(), "UNHEALTHY") {
				t.Fatalf("a service shutting down on purpose was probed:\n%s", progress)
			}
			if err := s.StartComponent(context.Background(), "svc"); err != nil {
				t.Fatal(err)
			}
			started := mustPid(t, s)
			setStalled(t, s, true)
			waitFor(t, progress, "UNHEALTHY from the new process's probe", hasUnhealthy(progress))
			setStalled(t, s, false)
			waitFor(t, progress, "restart", restartedFrom(s, started))
		})
	}
}

func TestEveryServiceIsProbedForLiveness(t *testing.T) {
	s := &Stack{opts: Options{Profile: ProfileGeo}, ports: map[string]int{}, tools: &tools{}}
	next := 40000
	for _, names := range componentPorts {
		for _, n := range names {
			s.ports[n] = next
			next++
		}
	}
	services := 0
	for _, n := range ProfileGeo.Components() {
		c, err := s.newComponent(n)
		if err != nil {
			t.Fatal(err)
		}
		if !c.service {
			continue
		}
		services++
		if want := "http://" + hostPort(s.ports[string(n)]) + "/healthz"; c.liveURL != want {
			t.Errorf("%s: LiveURL %q, want %q (its /readyz's host:port)", n, c.liveURL, want)
		}
	}
	if services != 9 {
		t.Errorf("%d services in the geo profile, want 9", services)
	}
}
