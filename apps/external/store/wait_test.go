package store_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/store"
)

// waitForWaiters waits until n Wait calls of s are asleep.
func waitForWaiters(t *testing.T, s *store.Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Waiters() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters asleep, want %d", s.Waiters(), n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestWaitWakesRightAfterAWrite checks that a sleeping Wait returns because
// of a write, with a fallback tick of an hour so that only the wake-up paths
// can explain a return: the in-process broadcast when the waiter shares the
// writer's Store, LISTEN/NOTIFY when it is another Store (another process) on
// the same database. It logs the latencies (BENCHMARKS.md has the figures);
// it asserts none, since the horizon is the whole cluster's and other test
// packages' transactions may hold it back for a while on a busy machine.
func TestWaitWakesRightAfterAWrite(t *testing.T) {
	const (
		rounds   = 20
		fallback = time.Hour
		// wakeDeadline only bounds a broken wake-up path.
		wakeDeadline = time.Minute
	)
	dsn := freshDSN(t)
	writer, _ := openStore(t, dsn, 4, store.Options{FallbackInterval: fallback})
	other, _ := openStore(t, dsn, 4, store.Options{FallbackInterval: fallback})
	ctx := t.Context()
	chat, err := writer.CreateChat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Warm up: the first write of a Store prepares its statements.
	if _, err := writer.CreateMessage(ctx, chat.ID, "warm-up"); err != nil {
		t.Fatal(err)
	}
	_, cursor := readChanges(t, writer, "", 2)

	for _, tc := range []struct {
		name   string
		waiter *store.Store
	}{{"same Store", writer}, {"other Store via NOTIFY", other}} {
		var lat []time.Duration
		for range rounds {
			woke := make(chan error, 1)
			wctx, cancel := context.WithTimeout(ctx, wakeDeadline)
			go func() { woke <- tc.waiter.Wait(wctx, cursor) }()
			waitForWaiters(t, tc.waiter, 1)
			start := time.Now()
			if _, err := writer.CreateMessage(ctx, chat.ID, "wake up"); err != nil {
				t.Fatal(err)
			}
			err := <-woke
			cancel()
			if err != nil {
				t.Fatalf("%s: Wait was not woken by the write: %v", tc.name, err)
			}
			lat = append(lat, time.Since(start))
			_, cursor = readChanges(t, writer, cursor, 1)
		}
		slices.Sort(lat)
		t.Logf("%s: write call start → Wait returned, %d writes: min %v p50 %v p90 %v max %v", tc.name, rounds,
			lat[0].Round(10*time.Microsecond), lat[rounds/2].Round(10*time.Microsecond),
			lat[rounds*9/10].Round(10*time.Microsecond), lat[rounds-1].Round(10*time.Microsecond))
	}
}

func TestWaitWakesManyWaitersWithOneWrite(t *testing.T) {
	t.Parallel()
	const waiters = 500
	s, _ := newStore(t, store.Options{FallbackInterval: time.Hour})
	ctx := t.Context()
	chat, err := s.CreateChat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, cursor := readChanges(t, s, "", 1)
	errs := make(chan error, waiters)
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() { errs <- s.Wait(ctx, cursor) })
	}
	waitForWaiters(t, s, waiters)
	start := time.Now()
	if _, err := s.CreateMessage(ctx, chat.ID, "everyone up"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	t.Logf("%d waiters woke %v after the write started", waiters, time.Since(start))
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	}
	if n := s.Waiters(); n != 0 {
		t.Fatalf("%d waiters still asleep", n)
	}
}

func TestWaitEnds(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, store.Options{})
	ctx := t.Context()
	if _, err := s.CreateChat(ctx); err != nil {
		t.Fatal(err)
	}
	_, cursor := readChanges(t, s, "", 1)

	t.Run("returns at once when there are changes", func(t *testing.T) {
		if err := s.Wait(ctx, ""); err != nil {
			t.Fatalf("Wait from the beginning = %v", err)
		}
	})
	t.Run("returns ctx.Err() when the context ends", func(t *testing.T) {
		waitCtx, cancel := context.WithCancel(ctx)
		woke := make(chan error, 1)
		go func() { woke <- s.Wait(waitCtx, cursor) }()
		waitForWaiters(t, s, 1)
		cancel()
		if err := <-woke; err != context.Canceled { // the contract is ctx.Err() itself
			t.Fatalf("Wait after cancel = %v, want context.Canceled", err)
		}
		timeoutCtx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if err := s.Wait(timeoutCtx, cursor); err != context.DeadlineExceeded {
			t.Fatalf("Wait past its deadline = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("returns ErrClosed when the store closes", func(t *testing.T) {
		woke := make(chan error, 1)
		go func() { woke <- s.Wait(ctx, cursor) }()
		waitForWaiters(t, s, 1)
		s.Close()
		if err := <-woke; !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Wait when the store closed = %v, want ErrClosed", err)
		}
		if err := s.Wait(ctx, cursor); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Wait on a closed store = %v, want ErrClosed", err)
		}
	})
}
