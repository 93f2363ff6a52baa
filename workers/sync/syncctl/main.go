// Command syncctl operates the sync workflow, the way the temporal CLI
// would (it cannot be built here): show its status and its namespace's
// active cluster, pause and resume it, resync it to a cursor, and fail its
// namespace over to another cluster.
//
//	syncctl status [-json]
//	syncctl pause
//	syncctl resume
//	syncctl resync -cursor CURSOR
//	syncctl failover -to CLUSTER
//
// It reads the sync workers' own variables (TEMPORAL_ADDRESS,
// TEMPORAL_NAMESPACE); -address and -namespace override them. Exit status 0
// when the command took effect, 1 when it failed, 2 on a usage error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	replicationpb "go.temporal.io/api/replication/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	temporallog "go.temporal.io/sdk/log"

	"github.com/chatpoc/chat-poc/workflows"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const (
	// defaultTimeout bounds a whole command, its wait for the effect
	// included: a pause takes effect when the running activity reports
	// (within workflows.DefaultReportInterval), a failover when both
	// clusters refreshed their namespace caches.
	defaultTimeout = 30 * time.Second
	// checkEvery is how often a command waiting for its effect looks.
	checkEvery = 250 * time.Millisecond
)

const usage = `usage: syncctl [-address host:port] [-namespace NS] [-timeout D] COMMAND

Commands:
  status [-json]          the sync's state, cursor, worker, Kafka cluster and lag,
                          and its namespace's active cluster
  pause                   stop polling once the running activity reports; the
                          cursor stays where it is (waits until no activity runs)
  resume                  undo pause
  resync -cursor CURSOR   publish again every change after CURSOR ("" = the oldest
                          external retains), and clear a failure
  failover -to CLUSTER    make CLUSTER the active cluster of the sync's namespace
                          (a global namespace; waits until it is)

Environment: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE (as the sync workers).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError is a command line that cannot be run.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// run runs the command line args and returns the exit status; getenv reads
// the environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, getenv, stdout)
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "syncctl: %s\n\n%s", ue.msg, usage)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "syncctl: %v\n", err)
		return exitFail
	}
}

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("syncctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	address := fs.String("address", getenv("TEMPORAL_ADDRESS"), "host:port of the Temporal frontend (default $TEMPORAL_ADDRESS)")
	namespace := fs.String("namespace", or(getenv("TEMPORAL_NAMESPACE"), "default"), "the sync's namespace (default $TEMPORAL_NAMESPACE, else default)")
	timeout := fs.Duration("timeout", defaultTimeout, "bound of the whole command, its wait for the effect included")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"no command"}
	}
	if *address == "" {
		return usageError{"no Temporal address: set TEMPORAL_ADDRESS or -address"}
	}
	if *timeout <= 0 {
		return usageError{"-timeout must be positive"}
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	sub := flag.NewFlagSet(cmd, flag.ContinueOnError)
	sub.SetOutput(io.Discard)
	var (
		asJSON *bool
		cursor *string
		to     *string
	)
	switch cmd {
	case "status":
		asJSON = sub.Bool("json", false, "print JSON")
	case "resync":
		cursor = sub.String("cursor", "", "the cursor to publish again after")
	case "failover":
		to = sub.String("to", "", "the cluster to make active")
	case "pause", "resume":
	default:
		return usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
	if err := parse(sub, rest); err != nil {
		return err
	}
	if sub.NArg() > 0 {
		return usageError{fmt.Sprintf("%s: unexpected arguments %q", cmd, sub.Args())}
	}
	if cmd == "resync" && !flagSet(sub, "cursor") {
		return usageError{`resync needs -cursor (-cursor "" publishes again from the oldest retained change)`}
	}
	if cmd == "failover" && *to == "" {
		return usageError{"failover needs -to CLUSTER"}
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	tc, err := client.DialContext(ctx, client.Options{
		HostPort: *address, Namespace: *namespace, Identity: "syncctl",
		Logger: temporallog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s: %w", *address, err)
	}
	defer tc.Close()
	op := &operator{tc: tc, namespace: *namespace, out: stdout}
	switch cmd {
	case "status":
		return op.status(ctx, *asJSON)
	case "pause":
		return op.pause(ctx)
	case "resume":
		return op.signal(ctx, workflows.SignalResume, nil, "resumed")
	case "resync":
		return op.signal(ctx, workflows.SignalResync, workflows.ResyncRequest{Cursor: *cursor}, fmt.Sprintf("resynced to cursor %q", *cursor))
	default:
		return op.failover(ctx, *to)
	}
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// operator runs the commands against one namespace.
type operator struct {
	tc        client.Client
	namespace string
	out       io.Writer
}

// Namespace is the part of a namespace's description an operator needs.
type Namespace struct {
	Name          string   `json:"name"`
	Global        bool     `json:"global"`
	ActiveCluster string   `json:"activeCluster"`
	Clusters      []string `json:"clusters"`
}

// Report is what status prints.
type Report struct {
	Namespace Namespace        `json:"namespace"`
	RunID     string           `json:"runId"`
	Execution string           `json:"execution"` // the run's status in Temporal: Running, Terminated, …
	Sync      workflows.Status `json:"sync"`
	Pending   int              `json:"pendingActivities"`
}

func (o *operator) describeNamespace(ctx context.Context) (Namespace, error) {
	d, err := o.tc.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: o.namespace})
	if err != nil {
		return Namespace{}, fmt.Errorf("describe namespace %s: %w", o.namespace, err)
	}
	ns := Namespace{
		Name:          o.namespace,
		Global:        d.GetIsGlobalNamespace(),
		ActiveCluster: d.GetReplicationConfig().GetActiveClusterName(),
	}
	for _, c := range d.GetReplicationConfig().GetClusters() {
		ns.Clusters = append(ns.Clusters, c.GetClusterName())
	}
	return ns, nil
}

// report reads the namespace, the workflow's latest run and its status
// query (which answers on a closed run too).
func (o *operator) report(ctx context.Context) (Report, error) {
	ns, err := o.describeNamespace(ctx)
	if err != nil {
		return Report{}, err
	}
	r := Report{Namespace: ns}
	desc, err := o.tc.DescribeWorkflowExecution(ctx, workflows.WorkflowID, "")
	if err != nil {
		return r, fmt.Errorf("describe the sync workflow %s in namespace %s: %w", workflows.WorkflowID, o.namespace, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	r.RunID = info.GetExecution().GetRunId()
	r.Execution = info.GetStatus().String()
	r.Pending = len(desc.GetPendingActivities())
	res, err := o.tc.QueryWorkflow(ctx, workflows.WorkflowID, r.RunID, workflows.QueryStatus)
	if err == nil {
		err = res.Get(&r.Sync)
	}
	if err != nil {
		return r, fmt.Errorf("query the sync's status (run %s): %w", r.RunID, err)
	}
	return r, nil
}

func (o *operator) status(ctx context.Context, asJSON bool) error {
	r, err := o.report(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(o.out)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(o.out, 0, 0, 2, ' ', 0)
	scope := "local"
	if r.Namespace.Global {
		scope = fmt.Sprintf("global over %v", r.Namespace.Clusters)
	}
	s := r.Sync
	fmt.Fprintf(tw, "namespace\t%s (%s), active cluster %s\n", r.Namespace.Name, scope, r.Namespace.ActiveCluster)
	fmt.Fprintf(tw, "workflow\t%s run %s: %s\n", workflows.WorkflowID, r.RunID, r.Execution)
	fmt.Fprintf(tw, "sync\t%s\n", s.State)
	if s.Failure != "" {
		fmt.Fprintf(tw, "failure\t%s (recover with: syncctl resync -cursor %q)\n", s.Failure, s.Cursor)
	}
	fmt.Fprintf(tw, "cursor\t%q\n", s.Cursor)
	fmt.Fprintf(tw, "worker\t%s\n", or(s.Worker, "-"))
	fmt.Fprintf(tw, "kafka cluster\t%s\n", or(s.Cluster, "-"))
	fmt.Fprintf(tw, "last poll\t%s\n", when(s.LastPoll))
	fmt.Fprintf(tw, "lag\t%.3f s\n", s.LagSeconds)
	if s.LastError != "" {
		fmt.Fprintf(tw, "last error\t%s\n", s.LastError)
	}
	fmt.Fprintf(tw, "published\t%d changes in %d polls over %d runs\n", s.Totals.Changes, s.Totals.Polls, s.Totals.Runs)
	fmt.Fprintf(tw, "as of\t%s\n", when(s.AsOf))
	return tw.Flush()
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), time.Since(t).Round(100*time.Millisecond))
}

// send sends the sync workflow's running execution a signal.
func (o *operator) send(ctx context.Context, name string, arg any) error {
	if err := o.tc.SignalWorkflow(ctx, workflows.WorkflowID, "", name, arg); err != nil {
		return fmt.Errorf("signal %s to the sync workflow %s in namespace %s: %w", name, workflows.WorkflowID, o.namespace, err)
	}
	return nil
}

// signal sends a signal and says done.
func (o *operator) signal(ctx context.Context, name string, arg any, done string) error {
	if err := o.send(ctx, name, arg); err != nil {
		return err
	}
	fmt.Fprintf(o.out, "sync %s\n", done)
	return nil
}

// pause signals the sync to pause and waits until its activity stopped, so
// that nothing polls when it returns.
func (o *operator) pause(ctx context.Context) error {
	if err := o.send(ctx, workflows.SignalPause, nil); err != nil {
		return err
	}
	for {
		r, err := o.report(ctx)
		if err == nil && r.Pending == 0 && r.Sync.State != workflows.StateRunning {
			// Paused; a failed sync shows failed, and stays paused after a
			// resync until resumed.
			fmt.Fprintf(o.out, "sync paused at cursor %q (state %s; resume with: syncctl resume)\n", r.Sync.Cursor, r.Sync.State)
			return nil
		}
		if err := wait(ctx); err != nil {
			return fmt.Errorf("paused, but its activity had not stopped yet: %w", err)
		}
	}
}

// failover makes cluster to the namespace's active cluster and waits until
// the namespace says so.
func (o *operator) failover(ctx context.Context, to string) error {
	ns, err := o.describeNamespace(ctx)
	if err != nil {
		return err
	}
	if !ns.Global {
		return fmt.Errorf("namespace %s is local to cluster %s: only a global namespace fails over", ns.Name, ns.ActiveCluster)
	}
	known := false
	for _, c := range ns.Clusters {
		known = known || c == to
	}
	if !known {
		return fmt.Errorf("namespace %s is replicated to clusters %v, not to %q", ns.Name, ns.Clusters, to)
	}
	if ns.ActiveCluster != to {
		_, err = o.tc.WorkflowService().UpdateNamespace(ctx, &workflowservice.UpdateNamespaceRequest{
			Namespace:         o.namespace,
			ReplicationConfig: &replicationpb.NamespaceReplicationConfig{ActiveClusterName: to},
		})
		if err != nil {
			return fmt.Errorf("fail namespace %s over from %s to %s: %w", ns.Name, ns.ActiveCluster, to, err)
		}
	}
	for {
		ns, err = o.describeNamespace(ctx)
		if err == nil && ns.ActiveCluster == to {
			fmt.Fprintf(o.out, "namespace %s active in cluster %s\n", ns.Name, to)
			return nil
		}
		if err := wait(ctx); err != nil {
			return fmt.Errorf("failover of namespace %s to %s asked, not seen yet (active: %s): %w", ns.Name, to, ns.ActiveCluster, err)
		}
	}
}

func wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(checkEvery):
		return nil
	}
}
