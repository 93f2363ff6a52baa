package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/chatpoc/chat-poc/workflows"
)

// ensureSingleton starts the sync workflow unless it runs. Any number of
// workers may call it at once: the fixed workflow ID with the USE_EXISTING
// conflict policy makes every start but one a no-op.
//
// A sync whose last run was closed by hand (terminated, say) is started
// again from that run's checkpoint, read with the status query (queries work
// on closed workflows), so that nothing is skipped and little is
// republished; if that fails, from the oldest change external retains
// (everything is republished once; consumers absorb it by version).
func ensureSingleton(ctx context.Context, tc client.Client, log *slog.Logger) error {
	desc, err := tc.DescribeWorkflowExecution(ctx, workflows.WorkflowID, "")
	var notFound *serviceerror.NotFound
	var in workflows.SyncInput
	switch {
	case errors.As(err, &notFound):
		log.Info("starting the sync workflow for the first time, from the oldest change external retains")
	case err != nil:
		return fmt.Errorf("describe workflow %s: %w", workflows.WorkflowID, err)
	case desc.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
		log.Debug("sync workflow running", "runId", desc.GetWorkflowExecutionInfo().GetExecution().GetRunId())
		return nil
	default:
		info := desc.GetWorkflowExecutionInfo()
		in = resumeFrom(ctx, tc, info.GetExecution().GetRunId(), log)
		log.Warn("the sync workflow was closed; starting it again",
			"previousRun", info.GetExecution().GetRunId(), "status", info.GetStatus().String(), "cursor", in.Cursor)
	}
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       workflows.WorkflowID,
		TaskQueue:                workflows.TaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	}, workflows.Sync, in)
	if err != nil {
		return fmt.Errorf("start workflow %s: %w", workflows.WorkflowID, err)
	}
	log.Debug("sync workflow running", "runId", run.GetRunID())
	return nil
}

// resumeFrom reads the checkpoint of a closed run.
func resumeFrom(ctx context.Context, tc client.Client, runID string, log *slog.Logger) workflows.SyncInput {
	res, err := tc.QueryWorkflow(ctx, workflows.WorkflowID, runID, workflows.QueryStatus)
	var st workflows.Status
	if err == nil {
		err = res.Get(&st)
	}
	if err != nil {
		log.Warn("cannot read the closed sync's checkpoint; restarting from the oldest retained change", "err", err)
		return workflows.SyncInput{}
	}
	return workflows.SyncInput{Cursor: st.Cursor, Paused: st.State == workflows.StatePaused, Failure: st.Failure, Totals: st.Totals}
}
