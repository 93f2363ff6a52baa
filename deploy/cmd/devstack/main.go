// Command devstack runs the local stack of real servers on loopback.
//
//	devstack up    [flags]            start the stack, print the URLs, Ctrl-C stops everything
//	devstack exec  [flags] -- CMD...  start the stack, run CMD with stack.env in its environment, stop
//	devstack env   [-dir D]           print the running stack's stack.env
//	devstack status [-dir D]          list the running stack's components and pids
//	devstack kill|stop|start|restart COMPONENT [-dir D]
//	devstack promote [-dir D]         promote the Postgres standby
//	devstack dump [-dir D]            goroutine dumps of the running services, next to their logs
//
// Flags of up and exec:
//
//	-profile single|geo   components to run (default geo)
//	-dir DIR              state directory (default .devstack)
//	-ports fixed|auto     fixed: Temporal 7233, its UI 8233 (default); auto: all free
//	-fresh                delete the state directory's data first
//	-no-restart           do not restart our services when they die unexpectedly
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/chatpoc/chat-poc/deploy/devstack"
)

// shutdownTimeout bounds stopping the whole stack on Ctrl-C.
const shutdownTimeout = 90 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	code, err := run(ctx, log, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// run executes one devstack command and returns the process exit code.
func run(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 {
		return 2, errors.New("usage: devstack up|exec|env|status|kill|stop|start|restart|promote|dump [flags]")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "up", "exec":
		return runStack(ctx, log, cmd, args, stdout, stderr)
	case "env", "status", "promote", "dump", devstack.ActionKill, devstack.ActionStop, devstack.ActionStart, devstack.ActionRestart:
		return 0, control(ctx, cmd, args, stdout)
	}
	return 2, fmt.Errorf("unknown command %q: use up, exec, env, status, kill, stop, start, restart, promote or dump", cmd)
}

func runStack(ctx context.Context, log *slog.Logger, cmd string, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	profile := fs.String("profile", string(devstack.ProfileGeo), "components to run: single or geo")
	dir := fs.String("dir", ".devstack", "state directory")
	ports := fs.String("ports", string(devstack.PortsFixed), "fixed (Temporal 7233, UI 8233) or auto (all free)")
	fresh := fs.Bool("fresh", false, "delete the state directory's data first")
	noRestart := fs.Bool("no-restart", false, "do not restart services that die unexpectedly")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if cmd == "exec" && fs.NArg() == 0 {
		return 2, errors.New("usage: devstack exec [flags] -- COMMAND [ARGS...]")
	}
	if cmd == "up" && fs.NArg() > 0 {
		return 2, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	p, err := devstack.ParseProfile(*profile)
	if err != nil {
		return 2, err
	}
	pm, err := devstack.ParsePortMode(*ports)
	if err != nil {
		return 2, err
	}

	stack, err := devstack.Start(ctx, devstack.Options{
		Dir: *dir, Profile: p, Ports: pm, Fresh: *fresh, NoRestart: *noRestart, Progress: stderr, Logger: log,
	})
	if err != nil {
		return 1, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		fmt.Fprintln(stderr, "devstack: stopping")
		if err := stack.Close(stopCtx); err != nil {
			fmt.Fprintln(stderr, "devstack: stop:", err)
		}
	}()

	if cmd == "exec" {
		return execWith(ctx, stack, fs.Args(), stdout, stderr)
	}
	printURLs(stdout, stack)
	<-ctx.Done()
	return 0, nil
}

// execWith runs argv with the stack's variables in its environment and
// returns its exit code.
func execWith(ctx context.Context, stack *devstack.Stack, argv []string, stdout, stderr io.Writer) (int, error) {
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env = append(os.Environ(), stack.Env().Environ()...)
	c.Stdin, c.Stdout, c.Stderr = nil, stdout, stderr
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 30 * time.Second
	err := c.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 1, fmt.Errorf("run %s: %w", argv[0], err)
	}
	return 0, nil
}

func printURLs(w io.Writer, stack *devstack.Stack) {
	env := stack.Env()
	rows := []struct{ label, key string }{
		{"External UI", devstack.EnvExternalURL},
		{"Internal UI", devstack.EnvInternalURL},
		{"Internal UI (b)", devstack.EnvInternalBURL},
		{"Temporal UI", devstack.EnvTemporalUIURL},
		{"Temporal", devstack.EnvTemporalAddress},
		{"Kafka a", devstack.EnvKafkaABootstrap},
		{"Kafka b", devstack.EnvKafkaBBootstrap},
		{"Postgres primary", devstack.EnvPGPrimaryAddr},
		{"Postgres standby", devstack.EnvPGStandbyAddr},
		{"External Postgres", devstack.EnvPGExternalAddr},
		{"Redis", devstack.EnvRedisAddr},
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		if v := env[r.key]; v != "" {
			// People open the UIs as localhost, the name the Origin checks expect.
			v = strings.Replace(v, "http://127.0.0.1:", "http://localhost:", 1)
			fmt.Fprintf(w, "  %-18s %s\n", r.label, v)
		}
	}
	fmt.Fprintf(w, "\n  Every address and DSN: %s/stack.env   Logs: %s/logs/\n", stack.Dir(), stack.Dir())
	fmt.Fprintln(w, "  Ctrl-C stops everything.")
}

// control runs one of the commands that talk to a running launcher.
func control(ctx context.Context, cmd string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	dir := fs.String("dir", ".devstack", "state directory of the running stack")
	var component string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		component, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := devstack.Connect(*dir)
	if err != nil {
		return err
	}
	needComponent := cmd != "env" && cmd != "status" && cmd != "promote" && cmd != "dump"
	if needComponent && component == "" {
		return fmt.Errorf("usage: devstack %s COMPONENT [-dir D]", cmd)
	}
	n := devstack.Name(component)
	switch cmd {
	case "env":
		for _, kv := range c.Env().Environ() {
			fmt.Fprintln(stdout, kv)
		}
		return nil
	case "status":
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range st {
			state := "stopped"
			if s.Running {
				state = fmt.Sprintf("running  pid %d", s.Pid)
			}
			fmt.Fprintf(stdout, "%-11s %s\n", s.Name, state)
		}
		return nil
	case "promote":
		return c.PromoteStandby(ctx)
	case "dump":
		paths, err := c.DumpGoroutines(ctx)
		for _, p := range paths {
			fmt.Fprintln(stdout, p)
		}
		return err
	case devstack.ActionKill:
		return c.Kill(ctx, n)
	case devstack.ActionStop:
		return c.Stop(ctx, n)
	case devstack.ActionStart:
		return c.StartComponent(ctx, n)
	default:
		return c.Restart(ctx, n)
	}
}
