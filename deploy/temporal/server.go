package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uioptions "github.com/temporalio/ui-server/v2/server/server_options"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/membership/static"
	"go.temporal.io/server/common/metrics"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const (
	clusterName = "active"
	// Internal services (history, matching, worker) only talk to each other
	// over loopback, whatever -ip the frontend is bound to.
	internalIP = "127.0.0.1"
)

// options is the validated program configuration (see main.go for flags).
type options struct {
	IP          string
	Port        int
	HTTPPort    int // 0 = pick a free port
	UIPort      int // 0 = no UI
	MetricsPort int // 0 = no metrics
	DBFile      string
	Namespaces  []string
	Logger      *slog.Logger
	LogLevel    slog.Level
}

// devServer is a running Temporal server plus (optionally) its Web UI.
type devServer struct {
	server   temporal.Server
	logLevel *slog.LevelVar // floor for Temporal's own logs
	ui       *uiserver.Server
	httpPort int // frontend HTTP API port actually used
}

// dynamicConfig mirrors what `temporal server start-dev` turns on, plus the
// feature flags a dev server is expected to have (update, versioning, ...).
func dynamicConfig() dynamicconfig.StaticClient {
	dc := dynamicconfig.StaticClient{}
	set := func(k dynamicconfig.Key, v any) { dc[k] = v }

	// start-dev defaults.
	set(dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(), true)
	set(dynamicconfig.MakeKey("system.forceNexusEndpointRefreshOnRead"), true)
	set(dynamicconfig.FrontendPersistenceMaxQPS.Key(), 10000)
	set(dynamicconfig.HistoryPersistenceMaxQPS.Key(), 45000)
	set(dynamicconfig.HistoryCacheHostLevelMaxSize.Key(), 8096)
	set(dynamicconfig.FrontendMaxNamespaceVisibilityRPSPerInstance.Key(), 100)

	// Features (most already default to true in v1.32; set explicitly so a
	// server upgrade that flips a default does not silently break the app).
	set(dynamicconfig.FrontendEnableUpdateWorkflowExecution.Key(), true)
	set(dynamicconfig.FrontendEnableUpdateWorkflowExecutionAsyncAccepted.Key(), true)
	set(dynamicconfig.FrontendEnableWorkerVersioningDataAPIs.Key(), true)
	set(dynamicconfig.FrontendEnableWorkerVersioningRuleAPIs.Key(), true)
	set(dynamicconfig.FrontendEnableWorkerVersioningWorkflowAPIs.Key(), true)
	set(dynamicconfig.EnableDeploymentVersions.Key(), true)
	set(dynamicconfig.EnableEagerWorkflowStart.Key(), true)
	set(dynamicconfig.EnableActivityEagerExecution.Key(), true)
	set(dynamicconfig.EnableCancelWorkerPollsOnShutdown.Key(), true)
	return dc
}

func startDevServer(o options) (*devServer, error) {
	// Address other processes (UI, internal worker) use to reach the frontend.
	frontendDial := net.JoinHostPort(dialableIP(o.IP), strconv.Itoa(o.Port))

	// Fail early and clearly on taken ports (the UI server would os.Exit).
	fixed := map[string]int{"port": o.Port, "http-port": o.HTTPPort, "ui-port": o.UIPort, "metrics-port": o.MetricsPort}
	for name, p := range fixed {
		if p == 0 {
			continue
		}
		if err := checkPortFree(o.IP, p); err != nil {
			return nil, fmt.Errorf("-%s %d: %w", name, p, err)
		}
	}
	if o.HTTPPort == 0 {
		p, err := freePort(o.IP)
		if err != nil {
			return nil, err
		}
		o.HTTPPort = p
	}
	internalPorts := map[primitives.ServiceName]int{}
	for _, svc := range []primitives.ServiceName{primitives.HistoryService, primitives.MatchingService, primitives.WorkerService} {
		p, err := freePort(internalIP)
		if err != nil {
			return nil, err
		}
		internalPorts[svc] = p
	}

	sqlConf, err := prepareDatabase(o.DBFile, o.Namespaces)
	if err != nil {
		return nil, err
	}

	conf := &config.Config{}
	conf.Global.Membership.MaxJoinDuration = 30 * time.Second
	conf.Global.Membership.BroadcastAddress = internalIP
	if o.MetricsPort > 0 {
		conf.Global.Metrics = &metrics.Config{Prometheus: &metrics.PrometheusConfig{
			ListenAddress: net.JoinHostPort(o.IP, strconv.Itoa(o.MetricsPort)),
			HandlerPath:   "/metrics",
		}}
	}
	conf.Persistence.DefaultStore = "sqlite-default"
	conf.Persistence.VisibilityStore = "sqlite-default"
	conf.Persistence.NumHistoryShards = 1
	conf.Persistence.DataStores = map[string]config.DataStore{"sqlite-default": {SQL: sqlConf}}
	conf.ClusterMetadata = &cluster.Config{
		EnableGlobalNamespace:    false,
		FailoverVersionIncrement: 10,
		MasterClusterName:        clusterName,
		CurrentClusterName:       clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{clusterName: {
			Enabled:                true,
			InitialFailoverVersion: 1,
			RPCAddress:             frontendDial,
			HTTPAddress:            net.JoinHostPort(dialableIP(o.IP), strconv.Itoa(o.HTTPPort)),
			// Only used when the db file is new; afterwards the stored one wins.
			ClusterID: uuid.NewString(),
		}},
	}
	conf.DCRedirectionPolicy.Policy = "noop"
	conf.Services = map[string]config.Service{
		string(primitives.FrontendService): {RPC: config.RPC{GRPCPort: o.Port, HTTPPort: o.HTTPPort, BindOnIP: o.IP}},
	}
	hosts := map[primitives.ServiceName]static.Hosts{
		primitives.FrontendService: static.SingleLocalHost(frontendDial),
	}
	for svc, p := range internalPorts {
		conf.Services[string(svc)] = config.Service{RPC: config.RPC{GRPCPort: p, BindOnIP: internalIP}}
		hosts[svc] = static.SingleLocalHost(net.JoinHostPort(internalIP, strconv.Itoa(p)))
	}
	conf.Archival.History.State = "disabled"
	conf.Archival.Visibility.State = "disabled"
	conf.NamespaceDefaults.Archival.History.State = "disabled"
	conf.NamespaceDefaults.Archival.Visibility.State = "disabled"
	conf.PublicClient.HostPort = frontendDial

	logLevel := new(slog.LevelVar)
	logLevel.Set(o.LogLevel)
	logger := slogLogger{log: o.Logger, level: logLevel}
	authorizer, err := authorization.GetAuthorizerFromConfig(&conf.Global.Authorization)
	if err != nil {
		return nil, fmt.Errorf("authorizer: %w", err)
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&conf.Global.Authorization, logger)
	if err != nil {
		return nil, fmt.Errorf("claim mapper: %w", err)
	}
	server, err := temporal.NewServer(
		temporal.WithConfig(conf),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithStaticHosts(hosts),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(dynamicConfig()),
	)
	if err != nil {
		return nil, fmt.Errorf("creating server: %w", err)
	}

	ds := &devServer{server: server, logLevel: logLevel, httpPort: o.HTTPPort}
	if o.UIPort > 0 {
		ds.ui = uiserver.NewServer(uioptions.WithConfigProvider(&uiconfig.Config{
			Host:                o.IP,
			Port:                o.UIPort,
			TemporalGRPCAddress: frontendDial,
			EnableUI:            true,
			DefaultNamespace:    o.Namespaces[0],
			CORS:                uiconfig.CORS{CookieInsecure: true},
			HideLogs:            true,
			DisableNewsFetch:    true,
		}))
		// Start blocks until Stop; it exits the process itself on listen errors.
		go func() {
			if err := ds.ui.Start(); err != nil {
				o.Logger.Error("UI server failed", "error", err)
			}
		}()
	}

	if err := server.Start(); err != nil {
		ds.stopUI()
		return nil, fmt.Errorf("starting server: %w", err)
	}

	// Only report ready once the frontend answers for every namespace and the
	// UI serves its index page.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := waitFrontend(ctx, frontendDial, o.Namespaces); err != nil {
		_ = ds.Stop()
		return nil, err
	}
	if ds.ui != nil {
		if err := waitHTTP200(ctx, "http://"+net.JoinHostPort(dialableIP(o.IP), strconv.Itoa(o.UIPort))+"/"); err != nil {
			_ = ds.Stop()
			return nil, fmt.Errorf("UI: %w", err)
		}
	}
	return ds, nil
}

func (d *devServer) stopUI() {
	if d.ui != nil {
		d.ui.Stop()
	}
}

func (d *devServer) Stop() error {
	// Shutdown makes the server's internal worker log failed polls (WARN) and
	// canceled task-queue calls (ERROR). Unless info/debug logs were asked
	// for, mute Temporal's own logs from here on; Stop's result is returned.
	if d.logLevel.Level() >= slog.LevelWarn {
		d.logLevel.Set(slog.LevelError + 1)
	}
	d.stopUI()
	return d.server.Stop()
}

// prepareDatabase creates the SQLite schema if the file is new and registers
// the namespaces (a no-op for ones that already exist), before the server
// starts, exactly like start-dev does.
func prepareDatabase(dbFile string, namespaces []string) (*config.SQL, error) {
	abs, err := filepath.Abs(dbFile)
	if err != nil {
		return nil, err
	}
	conf := &config.SQL{
		PluginName:        sqliteplugin.PluginName,
		DatabaseName:      abs,
		ConnectAttributes: map[string]string{"mode": "rwc"},
	}
	if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Dir(abs)); err != nil {
			return nil, fmt.Errorf("db file directory: %w", err)
		}
		if err := sqliteschema.SetupSchema(conf); err != nil {
			_ = os.Remove(abs)
			return nil, fmt.Errorf("setting up sqlite schema in %s: %w", abs, err)
		}
	} else if err != nil {
		return nil, err
	}
	nsConfigs := make([]*sqliteschema.NamespaceConfig, 0, len(namespaces))
	for _, ns := range namespaces {
		// Retention is 24h (NewNamespaceConfig's default).
		c, err := sqliteschema.NewNamespaceConfig(clusterName, ns, false, nil)
		if err != nil {
			return nil, fmt.Errorf("namespace %q: %w", ns, err)
		}
		nsConfigs = append(nsConfigs, c)
	}
	if err := sqliteschema.CreateNamespaces(conf, nsConfigs...); err != nil {
		return nil, fmt.Errorf("registering namespaces: %w", err)
	}
	return conf, nil
}

func waitFrontend(ctx context.Context, addr string, namespaces []string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := workflowservice.NewWorkflowServiceClient(conn)
	for _, ns := range namespaces {
		for {
			_, err := client.DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: ns})
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("frontend %s not serving namespace %q: %w", addr, ns, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func waitHTTP200(ctx context.Context, url string) error {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", url, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePort returns an unused port on ip, chosen at random below the kernel's
// ephemeral range. A port from listen(":0") would be an ephemeral one, which
// any outgoing connection on the machine may take as its local port between
// our check and the server's bind; ports below that range are only taken by
// explicit binds. (The devstack launcher picks its ports the same way.)
func freePort(ip string) (int, error) {
	lo, hi := 10000, 32768
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if start, err := strconv.Atoi(f[0]); err == nil && start > lo+1000 {
				hi = start
			}
		}
	}
	for range 500 {
		p := lo + rand.IntN(hi-lo)
		if p >= 30000 && p < 30100 { // the stack's documented UI ports (30001, 30002, ...)
			continue
		}
		if checkPortFree(ip, p) == nil {
			return p, nil
		}
	}
	return 0, fmt.Errorf("finding a free port on %s: none free in %d-%d", ip, lo, hi-1)
}

func checkPortFree(ip string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return l.Close()
}

// dialableIP maps a wildcard bind address to loopback for clients.
func dialableIP(ip string) string {
	switch ip {
	case "0.0.0.0", "":
		return "127.0.0.1"
	case "::":
		return "::1"
	}
	return ip
}
