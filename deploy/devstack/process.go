package devstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL. Kafka and
// Postgres need a few seconds to shut down cleanly; anything longer is a hang.
const stopGrace = 20 * time.Second

// quitGrace is how long a process that overran stopGrace gets, after
// SIGQUIT, to write its stacks before SIGKILL.
const quitGrace = 3 * time.Second

// procSpec describes how to run one OS process of the stack.
type procSpec struct {
	name    string   // component name, used for the log and pid file
	path    string   // executable
	args    []string // arguments, without argv[0]
	dir     string   // working directory
	env     []string // extra environment (KEY=VALUE), appended to os.Environ()
	asUser  *userIDs // run with these credentials (Postgres refuses root)
	logPath string
	pidPath string
}

// userIDs is a resolved system user to run a process as.
type userIDs struct {
	name     string
	uid, gid uint32
}

// proc is one running OS process, in its own process group, that dies with
// the launcher (Pdeathsig) so nothing outlives a kill -9 of the launcher.
type proc struct {
	spec    procSpec
	cmd     *exec.Cmd
	logFile *os.File
	started time.Time
	done    chan struct{} // closed when the process has exited
	err     error         // exit status; valid after done is closed
}

// startProc starts spec's process, appending its stdout and stderr to its log
// file and writing its pid file.
func startProc(spec procSpec) (*proc, error) {
	if err := os.MkdirAll(filepath.Dir(spec.logPath), 0o755); err != nil {
		return nil, fmt.Errorf("create log dir: %w", err)
	}
	logFile, err := os.OpenFile(spec.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", spec.logPath, err)
	}
	fmt.Fprintf(logFile, "\n==== devstack: starting %s at %s: %s %s\n",
		spec.name, time.Now().Format(time.RFC3339), spec.path, strings.Join(spec.args, " "))

	cmd := exec.Command(spec.path, spec.args...)
	cmd.Dir = spec.dir
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // own group: stop/kill reaches its children too
		Pdeathsig: syscall.SIGKILL, // dies with the launcher, even after kill -9
	}
	if spec.asUser != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: spec.asUser.uid, Gid: spec.asUser.gid}
		cmd.Env = append(cmd.Env, "HOME="+spec.dir, "USER="+spec.asUser.name)
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	p := &proc{spec: spec, cmd: cmd, logFile: logFile, started: time.Now(), done: make(chan struct{})}
	if err := writePidFile(spec.pidPath, cmd.Process.Pid); err != nil {
		_ = p.kill()
		<-p.wait()
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		fmt.Fprintf(logFile, "==== devstack: %s exited: %v\n", spec.name, exitString(p.err))
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// wait returns a channel closed when the process has exited.
func (p *proc) wait() <-chan struct{} { return p.done }

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process group.
func (p *proc) kill() error { return p.signal(syscall.SIGKILL) }

// signal sends sig to the whole process group.
func (p *proc) signal(sig syscall.Signal) error {
	if err := syscall.Kill(-p.pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s %s: %w", p.spec.name, sig, err)
	}
	return nil
}

// stop asks the process group to terminate and waits; after stopGrace (or when
// ctx ends) it kills the group. It removes the pid file.
func (p *proc) stop(ctx context.Context) error {
	defer os.Remove(p.spec.pidPath)
	return p.terminate(ctx, stopGrace)
}

// terminate sends SIGTERM to the process group and waits; after grace (or
// when ctx ends) it kills the group. It leaves the pid file alone, as a crash
// would, for a restart to overwrite.
func (p *proc) terminate(ctx context.Context, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	// A stop that overran is a hang: SIGQUIT first makes a Go service write
	// every goroutine's stack to its log and exit (a JVM writes its
	// threads'), so that what it was stuck on is kept; then SIGKILL.
	quit := time.NewTimer(quitGrace)
	defer quit.Stop()
	if err := p.signal(syscall.SIGQUIT); err == nil {
		select {
		case <-p.done:
			return fmt.Errorf("%s did not stop within %s; sent SIGQUIT: its stacks are in its log", p.spec.name, grace)
		case <-quit.C:
		}
	}
	if err := p.kill(); err != nil {
		return err
	}
	<-p.done
	return fmt.Errorf("%s did not stop within %s; sent SIGQUIT (stacks in its log), then killed", p.spec.name, grace)
}

// logTail returns the last n lines of the process's log, for error messages.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func writePidFile(path string, pid int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create pid dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

// ReadPid reads a pid file written by the launcher.
func ReadPid(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, fmt.Errorf("parse pid file %s: %w", path, err)
	}
	return pid, nil
}

// ProcessAlive reports whether a process with pid exists and is not a zombie.
func ProcessAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name: "pid (comm) S ...".
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// reapStale kills process groups left behind by an earlier launcher of the same
// state directory (recorded in its pid files) whose working directory is still
// inside that directory, so a recycled pid of an unrelated process is never
// touched. (The working directory, unlike the command line, survives servers
// that rewrite their process title, such as redis-server.)
func reapStale(pidDir, stateDir string, log io.Writer) {
	entries, err := os.ReadDir(pidDir)
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	for _, e := range entries {
		path := filepath.Join(pidDir, e.Name())
		pid, err := ReadPid(path)
		if err != nil || !ProcessAlive(pid) || !cwdUnder(pid, stateDir) {
			os.Remove(path)
			continue
		}
		fmt.Fprintf(log, "  killing leftover %s (pid %d) from an earlier run\n", strings.TrimSuffix(e.Name(), ".pid"), pid)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for deadline := time.Now().Add(10 * time.Second); ProcessAlive(pid) && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
			os.Remove(path)
		}()
	}
	wg.Wait()
}

func cwdUnder(pid int, dir string) bool {
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return false
	}
	return cwd == dir || strings.HasPrefix(cwd, dir+string(filepath.Separator))
}

// runLogged runs a one-shot command to completion in dir (as user, when not
// nil), appending its output to component n's log.
func (s *Stack) runLogged(ctx context.Context, n Name, dir string, env []string, user *userIDs, path string, args ...string) error {
	log, err := os.OpenFile(s.logPath(n), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Fprintf(log, "==== devstack: (in %s) %s %s\n", dir, path, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if user != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: user.uid, Gid: user.gid}
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w (see %s)", filepath.Base(path), err, s.logPath(n))
	}
	return nil
}

// VmRSS reads the resident set size of process pid in KiB, from
// /proc/<pid>/status.
func VmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}
