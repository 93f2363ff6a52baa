package devstack

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
	s := &Stack{
		opts:     Options{NoRestart: noRestart, Progress: out, Logger: slog.New(slog.DiscardHandler), ReadyTimeout: 10 * time.Second},
		dir:      t.TempDir(),
		ports:    map[string]int{},
		comps:    map[Name]*component{},
		procs:    map[Name]*proc{},
		stopping: map[Name]bool{},
		backoff:  map[Name]time.Duration{},
		progress: &progress{w: out},
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	c := s.newService(Service{Name: "svc", Path: sleep, Args: []string{"300"}}, nil)
	s.comps[c.name], s.order = c, []Name{c.name}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	if err := s.startComponent(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return s, out
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
