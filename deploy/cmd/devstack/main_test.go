package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
)

// launcher returns the devstack binary: the one `make test` built
// (DEVSTACK_BIN), or a fresh build of this package.
func launcher(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("DEVSTACK_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "devstack")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build devstack: %v\n%s", err, out)
	}
	return bin
}

// runLauncher runs the launcher to completion (bounded by a minute: a bad
// input must fail fast, never hang) and returns its exit code and stderr.
func runLauncher(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, launcher(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("devstack %v hung for a minute; stderr:\n%s", args, stderr.String())
	}
	code := 0
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stderr.String()
}

func TestLauncherRejectsBadInputWithOneActionableLine(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name  string
		env   []string
		args  func(dir string) []string
		setup func(t *testing.T, dir string)
		want  []string // substrings of the error line
	}{
		{
			name: "unknown profile",
			args: func(dir string) []string { return []string{"up", "-profile", "triple", "-dir", dir} },
			want: []string{`unknown profile "triple"`, "geo, single"},
		},
		{
			name: "unknown port mode",
			args: func(dir string) []string { return []string{"up", "-ports", "some", "-dir", dir} },
			want: []string{`unknown port mode "some"`},
		},
		{
			name: "unknown command",
			args: func(dir string) []string { return []string{"launch"} },
			want: []string{`unknown command "launch"`},
		},
		{
			name: "missing java",
			env:  []string{devstack.EnvJava + "=/nonexistent/bin/java"},
			args: func(dir string) []string { return []string{"up", "-profile", "single", "-ports", "auto", "-dir", dir} },
			want: []string{"missing prerequisite", "java", "/nonexistent/bin/java", "apt-get install -y openjdk-17-jre-headless"},
		},
		{
			name: "missing postgres",
			env:  []string{devstack.EnvPGBinDir + "=/nonexistent/pg/bin"},
			args: func(dir string) []string { return []string{"up", "-profile", "single", "-ports", "auto", "-dir", dir} },
			want: []string{"missing prerequisite", "postgres", "apt-get install -y postgresql"},
		},
		{
			name: "port in use",
			setup: func(t *testing.T, dir string) {
				// The state directory remembers Redis on a port someone else now holds.
				if err := os.WriteFile(filepath.Join(dir, "ports.env"), []byte("redis="+strconv.Itoa(busyPort)+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			args: func(dir string) []string { return []string{"up", "-profile", "single", "-ports", "auto", "-dir", dir} },
			want: []string{"redis needs 127.0.0.1:" + strconv.Itoa(busyPort), "port already in use", "-fresh"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			code, stderr := runLauncher(t, tc.env, tc.args(dir)...)
			if code == 0 {
				t.Fatalf("exit code 0; stderr:\n%s", stderr)
			}
			errLine := lastLine(stderr)
			if !strings.HasPrefix(errLine, "devstack: ") {
				t.Fatalf("last line %q is not the launcher's error; stderr:\n%s", errLine, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(errLine, w) {
					t.Errorf("error line %q lacks %q", errLine, w)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "stack.env")); err == nil {
				t.Errorf("a failed start left a stack.env behind")
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestKilledLauncherLeavesNothingRunning starts a real single-profile stack
// in a subprocess, checks that a second launcher on the same state directory
// is refused, then kill -9s the launcher and checks that every server it
// started (and their children) dies and every port is free again.
func TestKilledLauncherLeavesNothingRunning(t *testing.T) {
	dir := t.TempDir()
	bin := launcher(t)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "up", "-profile", "single", "-ports", "auto", "-dir", dir)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	envPath := filepath.Join(dir, "stack.env")
	deadline := time.After(8 * time.Minute) // includes a cold Kafka/Temporal first start
	for ready := false; !ready; {
		select {
		case err := <-exited:
			t.Fatalf("launcher exited before ready: %v\n%s", err, stderr.String())
		case <-deadline:
			t.Fatalf("stack not ready within 8 minutes:\n%s", stderr.String())
		case <-time.After(200 * time.Millisecond):
			_, err := os.Stat(envPath)
			ready = err == nil
		}
	}

	// A second launcher on the same directory must be refused, not corrupt it.
	code, second := runLauncher(t, nil, "up", "-profile", "single", "-ports", "auto", "-dir", dir)
	if code == 0 || !strings.Contains(lastLine(second), "already running") || !strings.Contains(lastLine(second), strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("second launcher: exit %d, stderr:\n%s", code, second)
	}
	if _, err := os.Stat(envPath); err != nil {
		t.Fatalf("the refused second launcher disturbed the running stack: %v", err)
	}

	pids := readPids(t, filepath.Join(dir, "pids"))
	for _, n := range devstack.ProfileSingle.Components() {
		if _, ok := pids[string(n)]; !ok {
			t.Fatalf("no pid file for %s; have %v", n, pids)
		}
	}
	ports := readPorts(t, filepath.Join(dir, "ports.env"))
	t.Cleanup(func() { // should the test fail, leave nothing behind either
		for _, pid := range pids {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited

	stacktest.WaitFor(t, 30*time.Second, "the stack's servers to die with the launcher", func() error {
		var alive []string
		for name, pid := range pids {
			if members := groupMembers(pid); len(members) > 0 {
				alive = append(alive, fmt.Sprintf("%s (group %d: %v)", name, pid, members))
			}
		}
		if len(alive) > 0 {
			return errors.New("still running: " + strings.Join(alive, ", "))
		}
		return nil
	})
	stacktest.WaitFor(t, 30*time.Second, "the stack's ports to be free", func() error {
		for name, port := range ports {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				return fmt.Errorf("port %d (%s) still taken: %w", port, name, err)
			}
			l.Close()
		}
		return nil
	})
}

func readPids(t *testing.T, dir string) map[string]int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for _, e := range entries {
		pid, err := devstack.ReadPid(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		pids[strings.TrimSuffix(e.Name(), ".pid")] = pid
	}
	return pids
}

func readPorts(t *testing.T, path string) map[string]int {
	t.Helper()
	env, err := devstack.ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]int{}
	for k, v := range env {
		p, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("ports.env %s=%s: %v", k, v, err)
		}
		ports[k] = p
	}
	return ports
}

// groupMembers lists the live processes of process group pgid.
func groupMembers(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		line, _ := bufio.NewReader(f).ReadString('\n')
		f.Close()
		// "pid (comm) state ppid pgrp ...": fields after the last ')'.
		i := strings.LastIndexByte(line, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(line[i+1:])
		if len(fields) < 3 || fields[0] == "Z" {
			continue
		}
		if g, _ := strconv.Atoi(fields[2]); g == pgid {
			out = append(out, pid)
		}
	}
	return out
}
