// Package workflows holds the deterministic Temporal workflows of chat-poc:
// the singleton sync workflow that drives the polling of external's change
// feed. No I/O happens here; the activities package does it.
package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/chatpoc/chat-poc/activities"
)

// Sync is the sync workflow: it runs the poll activity (activities.Sync) in a
// loop, each execution polling for a report interval and returning its
// checkpoint, which the workflow keeps in its state (and so in its durable
// history) and hands to the next execution. A worker that dies mid-execution
// loses nothing: the server retries the activity on another worker after
// HeartbeatTimeout, from the checkpoint of the last heartbeat.
//
// It never completes by itself; it continues as new, carrying the cursor and
// counters, before its history grows long. Signals pause, resume and resync
// it; the status query reports it. When its logic changes, guard the change
// with workflow.GetVersion so that running histories still replay.
func Sync(ctx workflow.Context, in SyncInput) error {
	return newSyncer(in).run(ctx)
}

// syncer is the state of one run.
type syncer struct {
	in     SyncInput // cursor, pause, failure and totals: what the next run inherits
	opts   Options   // in.Options with defaults applied
	status Status    // the rest of the query answer
	// resync is the cursor of a resync signal received while an activity
	// ran: it wins over that activity's checkpoint.
	resync *string
}

func newSyncer(in SyncInput) *syncer {
	opts := in.Options
	if opts.ReportInterval <= 0 {
		opts.ReportInterval = DefaultReportInterval
	}
	if opts.MaxHistoryEvents <= 0 {
		opts.MaxHistoryEvents = DefaultMaxHistoryEvents
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	in.Totals.Runs++
	return &syncer{in: in, opts: opts}
}

// activityOptions: retried forever (a sync that gives up loses changes),
// except for the errors retrying cannot fix; heartbeats detect a dead worker.
func (s *syncer) activityOptions() workflow.ActivityOptions {
	return workflow.ActivityOptions{
		// A safety net only: the activity returns after ReportInterval, and a
		// stuck one is caught by the heartbeat timeout long before this.
		StartToCloseTimeout: s.opts.ReportInterval + time.Minute,
		HeartbeatTimeout:    HeartbeatTimeout,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    100 * time.Millisecond,
			BackoffCoefficient: 2,
			// Retries here follow worker deaths and fencing, not external's
			// errors (the activity retries those itself): keep them prompt.
			MaximumInterval:        time.Second,
			NonRetryableErrorTypes: []string{activities.ErrTypeCursorExpired, activities.ErrTypeBadCursor},
		},
	}
}

func (s *syncer) run(ctx workflow.Context) error {
	logger := workflow.GetLogger(ctx)
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (Status, error) { return s.snapshot(), nil }); err != nil {
		return err
	}
	pause := workflow.GetSignalChannel(ctx, SignalPause)
	resume := workflow.GetSignalChannel(ctx, SignalResume)
	resync := workflow.GetSignalChannel(ctx, SignalResync)
	onSignal := func(sel workflow.Selector) {
		sel.AddReceive(pause, func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, nil); s.pause(logger) })
		sel.AddReceive(resume, func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, nil); s.resume(logger) })
		sel.AddReceive(resync, func(c workflow.ReceiveChannel, _ bool) {
			var r ResyncRequest
			c.Receive(ctx, &r)
			s.resyncTo(logger, r)
		})
	}
	actx := workflow.WithActivityOptions(ctx, s.activityOptions())
	var a *activities.Activities // method values name the activity; the worker registers the real one
	for {
		if s.historyFull(ctx) {
			// Handle the signals already received, so that none is lost
			// when the run continues as new.
			drain := workflow.NewSelector(ctx)
			onSignal(drain)
			for drain.HasPending() {
				drain.Select(ctx)
			}
			logger.Info("continuing as new", "cursor", s.in.Cursor, "historyLength", workflow.GetInfo(ctx).GetCurrentHistoryLength())
			return workflow.NewContinueAsNewError(ctx, Sync, s.in)
		}
		sel := workflow.NewSelector(ctx)
		onSignal(sel)
		if s.state() != StateRunning {
			sel.Select(ctx) // wait for resume or resync
			continue
		}
		fut := workflow.ExecuteActivity(actx, a.Sync, activities.SyncParams{
			Cursor:      s.in.Cursor,
			ReportAfter: s.opts.ReportInterval,
			PageSize:    s.opts.PageSize,
		})
		done := false
		sel.AddFuture(fut, func(f workflow.Future) {
			done = true
			var p activities.Progress
			err := f.Get(ctx, &p)
			s.report(workflow.Now(ctx), p, err, logger)
		})
		for !done {
			sel.Select(ctx)
		}
	}
}

// report takes an activity execution's outcome into the state.
func (s *syncer) report(now time.Time, p activities.Progress, err error, logger log.Logger) {
	s.status.AsOf = now
	if err != nil {
		// Only errors retrying cannot fix get here (the retry policy has no
		// attempt limit): stop, visibly, until an operator resyncs.
		s.in.Failure = failureText(err)
		logger.Error("sync failed; send a resync signal to recover", "error", err)
		s.resync = nil
		return
	}
	s.in.Totals.Changes += p.Changes
	s.in.Totals.Polls += p.Polls
	s.in.Cursor = p.Cursor
	if s.resync != nil {
		s.in.Cursor, s.resync = *s.resync, nil
	}
	s.status.Worker, s.status.Cluster, s.status.LastError = p.Worker, p.Cluster, p.LastError
	if !p.LastPoll.IsZero() {
		s.status.LastPoll = p.LastPoll
	}
	s.status.LagSeconds = p.Lag.Seconds()
}

func failureText(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Type() + ": " + app.Message()
	}
	return err.Error()
}

func (s *syncer) pause(logger log.Logger) {
	s.in.Paused = true
	logger.Info("sync paused")
}

func (s *syncer) resume(logger log.Logger) {
	s.in.Paused = false
	logger.Info("sync resumed")
}

// resyncTo moves the cursor (now, or when the running activity reports) and
// clears a failure; it does not unpause.
func (s *syncer) resyncTo(logger log.Logger, r ResyncRequest) {
	cursor := r.Cursor
	s.resync = &cursor
	s.in.Cursor = cursor
	s.in.Failure = ""
	logger.Info("sync resynced", "cursor", cursor)
}

// historyFull reports whether this run should continue as new: between
// activity executions, when the history reached the configured length or
// the server suggests it.
func (s *syncer) historyFull(ctx workflow.Context) bool {
	info := workflow.GetInfo(ctx)
	return info.GetCurrentHistoryLength() >= s.opts.MaxHistoryEvents || info.GetContinueAsNewSuggested()
}

func (s *syncer) state() State {
	switch {
	case s.in.Failure != "":
		return StateFailed
	case s.in.Paused:
		return StatePaused
	default:
		return StateRunning
	}
}

func (s *syncer) snapshot() Status {
	st := s.status
	st.State = s.state()
	st.Failure = s.in.Failure
	st.Cursor = s.in.Cursor
	st.Totals = s.in.Totals
	return st
}
