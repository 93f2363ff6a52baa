package converge

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
)

// Check reads the log at logPath and the recorded streams at streamPaths,
// loads the rows of the log's chats from pool, and compares them.
func Check(ctx context.Context, pool *pgxpool.Pool, logPath string, streamPaths ...string) (Report, error) {
	acked, err := loadgen.ReadLog(logPath)
	if err != nil {
		return Report{}, fmt.Errorf("convergence check: %w", err)
	}
	streams, err := ReadStreams(streamPaths)
	if err != nil {
		return Report{}, fmt.Errorf("convergence check: %w", err)
	}
	db, err := LoadDB(ctx, pool, ChatIDs(acked))
	if err != nil {
		return Report{}, fmt.Errorf("convergence check: %w", err)
	}
	return Compare(acked, db, streams), nil
}

// Await compares acked and streams with the rows of the log's chats in pool
// every interval until the database converged (Report.Converged) or ctx
// ends, and returns the last report and how long it waited. A read that fails (a failover in progress) is tried again at the
// next interval; Await returns an error only if ctx ends before any read
// succeeded.
func Await(ctx context.Context, pool *pgxpool.Pool, acked []loadgen.Record, streams []Stream, interval time.Duration) (Report, time.Duration, error) {
	began := time.Now()
	ids := ChatIDs(acked)
	var (
		last    Report
		have    bool
		lastErr error
	)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		db, err := LoadDB(ctx, pool, ids)
		if err == nil {
			last, have = Compare(acked, db, streams), true
			if last.Converged() {
				return last, time.Since(began), nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if !have {
				return Report{}, time.Since(began), fmt.Errorf("await convergence: %w (last read: %v)", ctx.Err(), lastErr)
			}
			return last, time.Since(began), nil
		case <-tick.C:
		}
	}
}
