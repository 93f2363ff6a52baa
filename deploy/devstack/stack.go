// Package devstack runs the local stack of real servers — Postgres primary and
// standby, Redis, Kafka a and b with MirrorMaker 2, an embedded Temporal — on
// loopback, each as its own OS process, for `make run`, the tests and the
// benchmarks. It waits until each server really serves, writes every address
// to <dir>/stack.env and a pid file per process to <dir>/pids/, and offers the
// operations chaos tests need (kill -9, stop, start, promote the standby) both
// in-process (Stack) and over a loopback control API (Client).
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// ErrAlreadyRunning reports that another launcher holds the state directory.
var ErrAlreadyRunning = errors.New("a devstack launcher is already running in this state directory")

// ErrUnknownComponent reports an operation on a component the stack does not run.
var ErrUnknownComponent = errors.New("unknown component")

// defaultReadyTimeout bounds how long one component may take to become ready.
// A cold Temporal build is the slowest step (about 3 minutes on 2 cores).
const defaultReadyTimeout = 6 * time.Minute

// probeInterval is how often a starting component's readiness is probed.
const probeInterval = 200 * time.Millisecond

// Options configures a stack.
type Options struct {
	Dir          string        // state directory (data, logs, pids, stack.env); default ".devstack"
	Profile      Profile       // which components to run; default geo
	Ports        PortMode      // fixed (documented ports) or auto (all free); default fixed
	Fresh        bool          // delete the state directory's data first
	RepoRoot     string        // checkout root (for building temporal-dev); default: found from the working directory
	CacheDir     string        // downloads and builds shared by checkouts; default $XDG_CACHE_HOME/chat-poc
	ReadyTimeout time.Duration // per component; default 6 minutes
	Progress     io.Writer     // one line per component as it starts and is ready; default os.Stderr
	Logger       *slog.Logger  // diagnostics; default discards
	// Services are our own processes (external, sync workers, writers,
	// internal), started after the infrastructure, with a restart policy.
	Services []Service
	// NoRestart turns the services' restart policy off, for tests that kill a
	// service and want it to stay dead. It also spares a service whose
	// liveness probe fails: the launcher reports it UNHEALTHY but leaves it
	// running (Kubernetes would kill it regardless), so a test that stalls or
	// kills services finds them as it left them.
	NoRestart bool
}

// Service is one of our own processes, run like a container with a restart
// policy: when it dies without being asked to, it is started again after a
// backoff (restartBackoffMin doubling to restartBackoffMax), and that is logged.
// Once ready it is probed for liveness (LiveURL): a service that stays running
// but keeps saying it is dead is terminated and restarted the same way.
type Service struct {
	Name     Name
	Path     string   // executable (or Build)
	Build    string   // instead of Path: a main package of this checkout to build, e.g. ./apps/external
	Args     []string // arguments
	Env      []string // KEY=VALUE on top of the launcher's environment and stack.env
	After    []Name   // components that must be ready first (default: all infrastructure)
	ReadyURL string   // GET returns 200 when ready; empty means ready once started
	// LiveURL answers GET with a 2xx while the process is alive; anything
	// else, or no answer within livenessTimeout, livenessFailures times in a
	// row, makes it UNHEALTHY (see livenessPeriod). Empty means no liveness
	// probe. Unlike ReadyURL it must not depend on other servers: a service
	// waiting for Postgres is not ready, but restarting it would not help.
	LiveURL string
}

// Restart policy of services.
const (
	restartBackoffMin = 500 * time.Millisecond
	restartBackoffMax = 30 * time.Second
	// restartResetAfter is how long a service must run for its backoff to start over.
	restartResetAfter = time.Minute
)

// Stack is a running local stack owned by this process.
type Stack struct {
	opts    Options
	dir     string // absolute
	tools   *tools
	ports   map[string]int
	secrets secrets
	lock    *os.File
	control *http.Server
	token   string

	comps map[Name]*component
	order []Name

	mu    sync.Mutex
	procs map[Name]*proc
	// stopping holds components stopped on purpose: their exit is not reported.
	stopping map[Name]bool
	backoff  map[Name]time.Duration // next restart delay of each service
	// endLive ends the liveness probe of each component's current process;
	// own calls it, so a service shutting down on purpose is not probed.
	endLive  map[Name]context.CancelFunc
	liveness livenessPolicy // probe timing: defaultLiveness, shorter in tests
	probing  sync.WaitGroup // liveness probes running; Close waits for them
	promoted bool
	progress *progress
	life     context.Context // ends when the stack is closed
	endLife  context.CancelFunc
	jarsMu   sync.Mutex // one Maven resolution at a time
}

// component is one server of the stack: how to prepare, run and probe it.
type component struct {
	name    Name
	after   []Name                          // started once these are ready
	prepare func(ctx context.Context) error // idempotent setup before every start (configs, initdb, format)
	spec    func() procSpec
	ready   func(ctx context.Context) error // one readiness probe; nil error means ready
	// initialize runs once the component is ready, on every start (idempotent:
	// roles, databases).
	initialize func(ctx context.Context) error
	addr       string // shown in progress output
	service    bool   // restarted by the launcher when it dies unexpectedly
	liveURL    string // probed once ready (services only); empty: never
}

// Start brings up the profile's components, each once its dependencies are
// ready, and returns when all of them serve. On failure it stops what it
// started and returns an error naming the component, with its log's tail.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	s, err := newStack(opts)
	if err != nil {
		return nil, err
	}
	if err := s.start(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = s.Close(stopCtx)
		return nil, err
	}
	return s, nil
}

func newStack(opts Options) (*Stack, error) {
	if opts.Dir == "" {
		opts.Dir = ".devstack"
	}
	if opts.Profile == "" {
		opts.Profile = ProfileGeo
	}
	if _, err := ParseProfile(string(opts.Profile)); err != nil {
		return nil, err
	}
	if opts.Ports == "" {
		opts.Ports = PortsFixed
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = defaultReadyTimeout
	}
	if opts.Progress == nil {
		opts.Progress = os.Stderr
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("find a cache directory (set XDG_CACHE_HOME): %w", err)
		}
		opts.CacheDir = filepath.Join(base, "chat-poc")
	}
	if opts.RepoRoot == "" {
		root, err := FindRepoRoot()
		if err != nil {
			return nil, err
		}
		opts.RepoRoot = root
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}

	t, err := findTools(opts.Profile)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Stack{
		opts:     opts,
		dir:      dir,
		tools:    t,
		lock:     lock,
		procs:    map[Name]*proc{},
		backoff:  map[Name]time.Duration{},
		stopping: map[Name]bool{},
		endLive:  map[Name]context.CancelFunc{},
		liveness: defaultLiveness(),
		progress: &progress{w: opts.Progress},
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	if err := s.setup(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// setup prepares the state directory, ports, secrets and component table.
func (s *Stack) setup() error {
	s.progress.printf("devstack: profile %s, state %s\n", s.opts.Profile, s.dir)
	reapStale(s.path("pids"), s.dir, s.opts.Progress)
	os.Remove(s.path("stack.env"))
	if s.opts.Fresh {
		for _, sub := range []string{"data", "logs", "pids", "ports.env", "secrets.env", "promoted"} {
			if err := os.RemoveAll(s.path(sub)); err != nil {
				return fmt.Errorf("wipe %s: %w", sub, err)
			}
		}
	}
	for _, sub := range []string{"data", "logs", "pids"} {
		if err := os.MkdirAll(s.path(sub), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", sub, err)
		}
	}
	if _, err := os.Stat(s.path("promoted")); err == nil {
		s.promoted = true
	}

	var err error
	if s.secrets, err = loadSecrets(s.path("secrets.env")); err != nil {
		return err
	}
	s.token = s.secrets.controlToken

	portNames := []string{portControl}
	for _, n := range s.opts.Profile.Components() {
		portNames = append(portNames, componentPorts[n]...)
	}
	if s.ports, err = assignPorts(s.path("ports.env"), portNames, s.opts.Ports); err != nil {
		return err
	}

	s.comps = map[Name]*component{}
	for _, n := range s.opts.Profile.Components() {
		c, err := s.newComponent(n)
		if err != nil {
			return err
		}
		for _, dep := range c.after {
			if !s.opts.Profile.Has(dep) {
				return fmt.Errorf("component %s needs %s, which profile %s lacks", n, dep, s.opts.Profile)
			}
		}
		s.comps[n] = c
		s.order = append(s.order, n)
	}
	infra := slices.Clone(s.order)
	for _, svc := range s.opts.Services {
		if _, dup := s.comps[svc.Name]; dup {
			return fmt.Errorf("service %s: a component of that name exists already", svc.Name)
		}
		c := s.newService(svc, infra)
		for _, dep := range c.after {
			if _, ok := s.comps[dep]; !ok {
				return fmt.Errorf("service %s needs %s, which the stack does not run", svc.Name, dep)
			}
		}
		s.comps[svc.Name] = c
		s.order = append(s.order, svc.Name)
	}
	return nil
}

// newService makes a component of one of our services. It sees the stack's
// addresses (stack.env) in its environment.
func (s *Stack) newService(svc Service, infra []Name) *component {
	after := svc.After
	if after == nil {
		after = infra
	}
	path := svc.Path
	return &component{
		name:    svc.Name,
		after:   after,
		service: true,
		addr:    svc.ReadyURL,
		liveURL: svc.LiveURL,
		prepare: func(ctx context.Context) error {
			if svc.Build != "" {
				bin, err := s.buildService(ctx, svc.Name, svc.Build)
				if err != nil {
					return err
				}
				path = bin
			}
			return mkdirs(s.dataDir(svc.Name))
		},
		spec: func() procSpec {
			spec := s.baseSpec(svc.Name, path, svc.Args...)
			spec.env = append(s.Env().Environ(), svc.Env...)
			return spec
		},
		ready: func(ctx context.Context) error {
			if svc.ReadyURL == "" {
				return nil
			}
			return httpOK(ctx, svc.ReadyURL)
		},
	}
}

// componentPorts lists the ports each component listens on.
var componentPorts = map[Name][]string{
	PGPrimary:  {portPGPrimary},
	PGStandby:  {portPGStandby},
	PGExternal: {portPGExternal},
	Redis:      {portRedis},
	KafkaA:     {portKafkaA, portKafkaAControl},
	KafkaB:     {portKafkaB, portKafkaBControl},
	Temporal:   {portTemporal, portTemporalUI},
	External:   {portExternal},
	SyncA1:     {portSyncA1},
	SyncA2:     {portSyncA2},
	SyncB1:     {portSyncB1},
	WriterA1:   {portWriterA1},
	WriterA2:   {portWriterA2},
	WriterB1:   {portWriterB1},
	InternalA1: {portInternalA1},
	InternalB1: {portInternalB1},
}

func (s *Stack) newComponent(n Name) (*component, error) {
	switch n {
	case PGPrimary:
		return s.pgPrimary(), nil
	case PGStandby:
		return s.pgStandby(), nil
	case PGExternal:
		return s.pgExternal(), nil
	case Redis:
		return s.redis(), nil
	case KafkaA:
		return s.kafka(n, portKafkaA, portKafkaAControl), nil
	case KafkaB:
		return s.kafka(n, portKafkaB, portKafkaBControl), nil
	case MirrorMaker:
		return s.mirrorMaker(), nil
	case Temporal:
		return s.temporal(), nil
	case External:
		return s.external(), nil
	case SyncA1:
		return s.syncWorker(n, portSyncA1), nil
	case SyncA2:
		return s.syncWorker(n, portSyncA2), nil
	case SyncB1:
		return s.syncWorker(n, portSyncB1), nil
	case WriterA1:
		return s.writer(n, KafkaA, portWriterA1), nil
	case WriterA2:
		return s.writer(n, KafkaA, portWriterA2), nil
	case WriterB1:
		return s.writer(n, KafkaB, portWriterB1), nil
	case InternalA1:
		return s.internalApp(n, KafkaA, portInternalA1), nil
	case InternalB1:
		return s.internalApp(n, KafkaB, portInternalB1), nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownComponent, n)
}

func (s *Stack) start(ctx context.Context) error {
	began := time.Now()
	ready := map[Name]chan struct{}{}
	for _, n := range s.order {
		ready[n] = make(chan struct{})
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range s.order {
		c := s.comps[n]
		g.Go(func() error {
			for _, dep := range c.after {
				select {
				case <-ready[dep]:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			if err := s.startComponent(gctx, c); err != nil {
				return err
			}
			close(ready[n])
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := s.startControl(); err != nil {
		return err
	}
	if err := writeEnvFile(s.path("stack.env"), s.Env()); err != nil {
		return err
	}
	s.progress.printf("devstack: %d components ready in %s\n", len(s.order), time.Since(began).Round(100*time.Millisecond))
	return nil
}

// startComponent prepares, starts and waits for one component.
func (s *Stack) startComponent(ctx context.Context, c *component) error {
	began := time.Now()
	s.progress.line(c.name, "starting", "")
	if c.prepare != nil {
		if err := c.prepare(ctx); err != nil {
			return s.failure(c, fmt.Errorf("prepare: %w", err))
		}
	}
	p, err := startProc(c.spec())
	if err != nil {
		return s.failure(c, err)
	}
	// live is p's own context, not ctx: a control request that starts a
	// service ends long before the service does.
	live, endLive := context.WithCancel(s.life)
	s.mu.Lock()
	s.procs[c.name] = p
	s.endLive[c.name] = endLive
	delete(s.stopping, c.name)
	s.mu.Unlock()
	go s.watch(c.name, p, endLive)

	if err := waitReady(ctx, c, p, s.opts.ReadyTimeout); err != nil {
		return s.failure(c, err)
	}
	if c.initialize != nil {
		if err := c.initialize(ctx); err != nil {
			return s.failure(c, fmt.Errorf("initialize: %w", err))
		}
	}
	if c.liveURL != "" {
		s.startLiveness(live, c, p)
	}
	s.progress.line(c.name, fmt.Sprintf("ready in %s", time.Since(began).Round(100*time.Millisecond)), c.addr)
	return nil
}

// waitReady probes c until it is ready, its process exits, or the timeout.
func waitReady(ctx context.Context, c *component, p *proc, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	var last error
	for {
		probeCtx, cancelProbe := context.WithTimeout(ctx, 5*time.Second)
		last = c.ready(probeCtx)
		cancelProbe()
		if last == nil {
			return nil
		}
		select {
		case <-p.wait():
			return fmt.Errorf("exited before it was ready (%s)", exitString(p.err))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not ready after %s: %w", timeout, last)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// failure formats a start failure with the tail of the component's log.
func (s *Stack) failure(c *component, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrPrimaryFailedOver) {
		return fmt.Errorf("%s: %w", c.name, err) // nothing in the log explains these
	}
	logPath := s.logPath(c.name)
	return fmt.Errorf("%s: %w\n--- last lines of %s ---\n%s", c.name, err, logPath, logTail(logPath, 30))
}

// watch reports a component that exits without being asked to, and restarts
// it if it is a service and the restart policy is on. A liveness kill is such
// an exit. endLive ends p's liveness probe.
func (s *Stack) watch(n Name, p *proc, endLive context.CancelFunc) {
	<-p.wait()
	endLive()
	s.mu.Lock()
	expected := s.stopping[n]
	s.mu.Unlock()
	if expected || s.life.Err() != nil {
		return
	}
	s.progress.line(n, "EXITED", exitString(p.err)+"; log: "+s.logPath(n))
	c := s.comps[n]
	if !c.service || s.opts.NoRestart {
		return
	}
	s.mu.Lock()
	backoff := s.backoff[n]
	if backoff == 0 || time.Since(p.started) > restartResetAfter {
		backoff = restartBackoffMin
	}
	s.backoff[n] = min(2*backoff, restartBackoffMax)
	s.mu.Unlock()
	s.progress.line(n, "restarting", fmt.Sprintf("in %s", backoff))
	select {
	case <-time.After(backoff):
	case <-s.life.Done():
		return
	}
	s.mu.Lock()
	stopped := s.stopping[n]
	s.mu.Unlock()
	if stopped {
		return // stopped on purpose while we waited
	}
	if err := s.startComponent(s.life, c); err != nil {
		s.progress.line(n, "restart failed", err.Error())
		s.opts.Logger.Error("restart failed", "component", n, "err", err)
	}
}

// Dir returns the stack's absolute state directory.
func (s *Stack) Dir() string { return s.dir }

// Env returns the stack's addresses and DSNs, as written to stack.env.
func (s *Stack) Env() Env {
	env := Env{
		EnvDir:          s.dir,
		EnvProfile:      string(s.opts.Profile),
		EnvControlURL:   "http://" + hostPort(s.ports[portControl]),
		EnvControlToken: s.token,
	}
	for _, n := range s.order {
		switch n {
		case PGPrimary:
			s.pgEnv(env)
		case Redis:
			env[EnvRedisAddr] = hostPort(s.ports[portRedis])
		case KafkaA:
			env[EnvKafkaABootstrap] = hostPort(s.ports[portKafkaA])
			env[EnvKafkaLibs] = s.kafkaLibDir()
		case KafkaB:
			env[EnvKafkaBBootstrap] = hostPort(s.ports[portKafkaB])
		case External:
			env[EnvExternalURL] = "http://" + hostPort(s.ports[portExternal])
			env[EnvExternalAdminToken] = s.secrets.externalAdmin
		case InternalA1:
			env[EnvInternalURL] = fmt.Sprintf("http://localhost:%d", s.ports[portInternalA1])
		case InternalB1:
			env[EnvInternalBURL] = fmt.Sprintf("http://localhost:%d", s.ports[portInternalB1])
		case Temporal:
			env[EnvTemporalAddress] = hostPort(s.ports[portTemporal])
			env[EnvTemporalNamespace] = temporalNamespace
			env[EnvTemporalUIURL] = fmt.Sprintf("http://localhost:%d", s.ports[portTemporalUI])
		}
	}
	return env
}

// Components lists the stack's components in start order.
func (s *Stack) Components() []Name { return slices.Clone(s.order) }

// Pid returns the pid of a running component.
func (s *Stack) Pid(n Name) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.procs[n]
	if !ok || p.exited() {
		return 0, fmt.Errorf("%s is not running", n)
	}
	return p.pid(), nil
}

// Kill sends SIGKILL to a component's process group, as a crash would.
func (s *Stack) Kill(ctx context.Context, n Name) error {
	p, err := s.own(n)
	if err != nil {
		return err
	}
	if err := p.kill(); err != nil {
		return err
	}
	select {
	case <-p.wait():
		os.Remove(p.spec.pidPath)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop shuts a component down gracefully (SIGTERM, then SIGKILL after a grace period).
func (s *Stack) Stop(ctx context.Context, n Name) error {
	p, err := s.own(n)
	if err != nil {
		return err
	}
	return p.stop(ctx)
}

// StartComponent starts a stopped or killed component and waits until it is ready.
func (s *Stack) StartComponent(ctx context.Context, n Name) error {
	c, ok := s.comps[n]
	if !ok {
		return fmt.Errorf("%w %q in profile %s", ErrUnknownComponent, n, s.opts.Profile)
	}
	s.mu.Lock()
	p := s.procs[n]
	s.mu.Unlock()
	if p != nil && !p.exited() {
		return fmt.Errorf("%s is already running (pid %d)", n, p.pid())
	}
	return s.startComponent(ctx, c)
}

// Restart stops a component gracefully and starts it again.
func (s *Stack) Restart(ctx context.Context, n Name) error {
	if err := s.Stop(ctx, n); err != nil {
		return err
	}
	return s.StartComponent(ctx, n)
}

// own marks n as stopping on purpose and returns its process.
func (s *Stack) own(n Name) (*proc, error) {
	if _, ok := s.comps[n]; !ok {
		return nil, fmt.Errorf("%w %q in profile %s", ErrUnknownComponent, n, s.opts.Profile)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.procs[n]
	if !ok || p.exited() {
		return nil, fmt.Errorf("%s is not running", n)
	}
	s.stopping[n] = true
	s.endLive[n]() // a shutdown on purpose may fail probes; it must not count
	return p, nil
}

// Close stops every component, dependents before what they depend on, and
// releases the state directory.
func (s *Stack) Close(ctx context.Context) error {
	s.mu.Lock() // under mu, so no liveness probe starts after this (startLiveness)
	s.endLife()
	s.mu.Unlock()
	if s.control != nil {
		shutCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = s.control.Shutdown(shutCtx)
		cancel()
	}
	os.Remove(s.path("stack.env"))
	stopped := map[Name]chan struct{}{}
	for _, n := range s.order {
		stopped[n] = make(chan struct{})
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, n := range s.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(stopped[n])
			for _, other := range s.order { // wait for everything that depends on n
				if slices.Contains(s.comps[other].after, n) {
					<-stopped[other]
				}
			}
			s.mu.Lock()
			p := s.procs[n]
			s.stopping[n] = true
			s.mu.Unlock()
			if p == nil || p.exited() {
				return
			}
			if err := p.stop(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			s.progress.line(n, "stopped", "")
		}()
	}
	wg.Wait()
	s.probing.Wait() // ended with s.life; a probe terminating its process sees it exit
	if s.lock != nil {
		s.lock.Close()
	}
	return errors.Join(errs...)
}

func (s *Stack) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

func (s *Stack) dataDir(n Name) string { return s.path("data", string(n)) }
func (s *Stack) logPath(n Name) string { return s.path("logs", string(n)+".log") }
func (s *Stack) pidPath(n Name) string { return s.path("pids", string(n)+".pid") }

// baseSpec is the process spec every component starts from.
func (s *Stack) baseSpec(n Name, path string, args ...string) procSpec {
	return procSpec{
		name:    string(n),
		path:    path,
		args:    args,
		dir:     s.dataDir(n),
		logPath: s.logPath(n),
		pidPath: s.pidPath(n),
	}
}

// lockDir takes an exclusive, non-blocking lock on dir/lock for this process's
// lifetime. The kernel drops it when the process dies, even by kill -9.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder, _ := os.ReadFile(filepath.Join(dir, "lock"))
			return nil, fmt.Errorf("%w: %s (launcher pid %s); stop it with Ctrl-C, or use another -dir", ErrAlreadyRunning, dir, string(holderPid(holder)))
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return f, nil
}

func holderPid(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return []byte("unknown")
	}
	return b
}

// randomHex returns n random bytes, hex-encoded (passwords, tokens).
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}

// FindRepoRoot returns the checkout root: the nearest directory at or above the
// working directory holding deploy/temporal/go.mod.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "deploy", "temporal", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside a chat-poc checkout (no deploy/temporal/go.mod above the working directory); run from the checkout or pass -repo")
		}
		dir = parent
	}
}

func mkdirs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}
