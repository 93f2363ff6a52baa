package store_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/chatpoc/chat-poc/apps/external/store"
)

// cursorFor builds a cursor in the documented format (see doc.go): format
// byte, xid, seq, CRC-32 of the first 17 bytes.
func cursorFor(format byte, xid, seq uint64, breakCRC bool) string {
	b := make([]byte, 21)
	b[0] = format
	binary.BigEndian.PutUint64(b[1:9], xid)
	binary.BigEndian.PutUint64(b[9:17], seq)
	sum := crc32.ChecksumIEEE(b[:17])
	if breakCRC {
		sum++
	}
	binary.BigEndian.PutUint32(b[17:], sum)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestChangesPagesFromTheBeginning(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, store.Options{})
	ctx := t.Context()

	if page, next, err := s.Changes(ctx, "", 10); err != nil || len(page) != 0 || next != "" {
		t.Fatalf("Changes of an empty feed = %v, %q, %v; want nothing and the empty cursor back", page, next, err)
	}
	chat, err := s.CreateChat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.CreateMessage(ctx, chat.ID, "one")
	if err != nil {
		t.Fatal(err)
	}
	edited, err := s.UpdateMessage(ctx, chat.ID, m.ID, "one, edited")
	if err != nil {
		t.Fatal(err)
	}
	deleted, err := s.DeleteMessage(ctx, chat.ID, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	all, end := readChanges(t, s, "", 4)

	want := []store.Change{
		{Kind: store.KindChatCreated, ChatID: chat.ID, Version: chat.Version, At: chat.CreatedAt},
		{Kind: store.KindMessageCreated, ChatID: chat.ID, Message: &m, Version: m.Version, At: m.UpdatedAt},
		{Kind: store.KindMessageUpdated, ChatID: chat.ID, Message: &edited, Version: edited.Version, At: edited.UpdatedAt},
		{Kind: store.KindMessageDeleted, ChatID: chat.ID, Message: &deleted, Version: deleted.Version, At: deleted.UpdatedAt},
	}
	for i, c := range all {
		w := want[i]
		if c.Kind != w.Kind || c.ChatID != w.ChatID || c.Version != w.Version || !c.At.Equal(w.At) ||
			(c.Message == nil) != (w.Message == nil) || (c.Message != nil && !equalMessage(*c.Message, *w.Message)) {
			t.Errorf("change %d = %+v %+v\nwant %+v %+v", i, c, c.Message, w, w.Message)
		}
	}

	// Pages of 3 from the empty cursor give the same changes; the empty
	// cursor always starts at the beginning.
	for range 2 {
		page1, c1, err := s.Changes(ctx, "", 3)
		if err != nil || len(page1) != 3 || page1[0].Version != chat.Version {
			t.Fatalf("first page = %+v, %v", page1, err)
		}
		page2, c2, err := s.Changes(ctx, c1, 3)
		if err != nil || len(page2) != 1 || page2[0].Version != deleted.Version || c2 != end {
			t.Fatalf("second page = %+v, %q, %v; want the delete and cursor %q", page2, c2, err, end)
		}
	}
	if page, next, err := s.Changes(ctx, end, 0); err != nil || len(page) != 0 || next != end {
		t.Fatalf("Changes at the end = %v, %q, %v; want nothing and the same cursor back", page, next, err)
	}
}

func TestMalformedCursors(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, store.Options{})
	ctx := t.Context()
	if _, err := s.CreateChat(ctx); err != nil {
		t.Fatal(err)
	}
	_, valid := readChanges(t, s, "", 1)
	raw, err := base64.RawURLEncoding.DecodeString(valid)
	if err != nil {
		t.Fatalf("a cursor is not base64url: %v", err)
	}
	flipped := append([]byte{}, raw...)
	flipped[5] ^= 1

	cases := map[string]string{
		"not base64":           "not a cursor!",
		"padded":               valid + "=",
		"standard alphabet":    "+/+/+/+/+/+/+/+/+/+/+/+/+/+/",
		"too short":            valid[:len(valid)-4],
		"too long":             valid + "AAAA",
		"unknown format":       cursorFor(2, 5, 5, false),
		"checksum mismatch":    cursorFor(1, 5, 5, true),
		"one bit flipped":      base64.RawURLEncoding.EncodeToString(flipped),
		"seq out of range":     cursorFor(1, 5, 1<<63, false),
		"ahead of the feed":    cursorFor(1, 1<<62, 1, false),
		"JSON instead of bits": base64.RawURLEncoding.EncodeToString([]byte(`{"xid":1,"seq":2}`)),
	}
	for name, cursor := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, _, err := s.Changes(ctx, cursor, 10); !errors.Is(err, store.ErrBadCursor) {
				t.Errorf("Changes(%q) err = %v, want ErrBadCursor", cursor, err)
			}
			if name == "ahead of the feed" {
				return // well-formed: only the database can tell; Wait just waits
			}
			if err := s.Wait(ctx, cursor); !errors.Is(err, store.ErrBadCursor) {
				t.Errorf("Wait(%q) err = %v, want ErrBadCursor", cursor, err)
			}
		})
	}
}

func TestPruneExpiresOldCursors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn := freshDSN(t)
	s, pool := openStore(t, dsn, 8, store.Options{Retention: time.Microsecond})
	keep, _ := openStore(t, dsn, 4, store.Options{}) // default retention: a week

	chat, err := s.CreateChat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.CreateMessage(ctx, chat.ID, "old")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateMessage(ctx, chat.ID, m.ID, "old, edited"); err != nil {
		t.Fatal(err)
	}
	_, afterFirst := readChanges(t, s, "", 1)
	_, afterAll := readChanges(t, s, afterFirst, 2)

	if n, err := keep.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("Prune with a week's retention = %d, %v; want 0", n, err)
	}
	if n, err := s.Prune(ctx); err != nil || n != 3 {
		t.Fatalf("Prune with 1µs retention = %d, %v; want 3", n, err)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM changes`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("feed rows after Prune = %d, %v; want 0", left, err)
	}

	if _, _, err := s.Changes(ctx, afterFirst, 10); !errors.Is(err, store.ErrCursorExpired) {
		t.Errorf("Changes with a pruned-past cursor: err = %v, want ErrCursorExpired", err)
	}
	if err := s.Wait(ctx, afterFirst); !errors.Is(err, store.ErrCursorExpired) {
		t.Errorf("Wait with a pruned-past cursor: err = %v, want ErrCursorExpired", err)
	}
	// Another process learns of the Prune later; until then its Wait returns
	// at once (the head is past the cursor) and Changes reports the expiry.
	if err := keep.Wait(ctx, afterFirst); err != nil && !errors.Is(err, store.ErrCursorExpired) {
		t.Errorf("Wait with a pruned-past cursor in another Store: err = %v, want nil or ErrCursorExpired", err)
	}
	if _, _, err := keep.Changes(ctx, afterFirst, 10); !errors.Is(err, store.ErrCursorExpired) {
		t.Errorf("Changes with a pruned-past cursor in another Store: err = %v, want ErrCursorExpired", err)
	}
	if page, next, err := s.Changes(ctx, afterAll, 10); err != nil || len(page) != 0 || next != afterAll {
		t.Errorf("Changes after the newest pruned change = %v, %q, %v; want nothing, not expired", page, next, err)
	}
	if page, next, err := s.Changes(ctx, "", 10); err != nil || len(page) != 0 || next != "" {
		t.Errorf("Changes from the beginning of an empty retained feed = %v, %q, %v", page, next, err)
	}

	// New changes reach both the empty cursor and the up-to-date one.
	fresh, err := s.CreateMessage(ctx, chat.ID, "new")
	if err != nil {
		t.Fatal(err)
	}
	for name, cursor := range map[string]string{"empty cursor": "", "up-to-date cursor": afterAll} {
		got, _ := readChanges(t, keep, cursor, 1)
		if got[0].Version != fresh.Version {
			t.Errorf("%s after Prune read %+v, want the new message (version %d)", name, got[0], fresh.Version)
		}
	}
}

// TestFeedHoldsBackBehindOlderOpenTransactions commits a feed row while an
// older transaction is still open, the exact shape of a skip: the newer row
// must stay invisible until the older transaction ends, and then everything
// arrives in transaction order. Nothing notifies the end of such a
// transaction (it may belong to anything on the cluster); with the fallback
// tick off, Wait must still notice it promptly. Not parallel: its open
// transactions hold back the feed of every database on the cluster.
func TestFeedHoldsBackBehindOlderOpenTransactions(t *testing.T) {
	cases := []struct {
		name      string
		writeRow  bool // the older transaction writes a feed row itself
		commit    bool
		wantFirst bool // its row comes first
	}{
		{"older writer commits", true, true, true},
		{"older writer rolls back", true, false, false},
		{"older reader-only transaction with an ID commits", false, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s, pool := newStore(t, store.Options{FallbackInterval: time.Hour})
			chat, err := s.CreateChat(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, cursor := readChanges(t, s, "", 1)

			// The older transaction: its ID is assigned now, it ends last.
			older, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = older.Rollback(context.WithoutCancel(ctx)) }()
			olderChat := uuid.New()
			if tc.writeRow {
				_, err = older.Exec(ctx, `INSERT INTO changes (kind, chat_id, version, at)
                    VALUES ('chat.created', $1, nextval('versions'), clock_timestamp())`, olderChat)
			} else {
				_, err = older.Exec(ctx, `SELECT pg_current_xact_id()`)
			}
			if err != nil {
				t.Fatal(err)
			}

			newer, err := s.CreateMessage(ctx, chat.ID, "committed first")
			if err != nil {
				t.Fatal(err)
			}
			if page, next, err := s.Changes(ctx, cursor, 10); err != nil || len(page) != 0 || next != cursor {
				t.Fatalf("Changes while an older transaction is open = %+v, %v; want nothing yet", page, err)
			}
			waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			if err := s.Wait(waitCtx, cursor); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Wait while an older transaction is open = %v, want it to block", err)
			}

			woke := make(chan error, 1)
			go func() { woke <- s.Wait(ctx, cursor) }()
			if tc.commit {
				err = older.Commit(ctx)
			} else {
				err = older.Rollback(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			ended := time.Now()
			// The fallback tick is an hour: only the re-reads while changes
			// wait behind the horizon can wake this Wait.
			if err := <-woke; err != nil {
				t.Fatalf("Wait after the older transaction ended: %v", err)
			}
			t.Logf("Wait returned %v after the older transaction ended", time.Since(ended))

			want := 1
			if tc.wantFirst {
				want = 2
			}
			got, end := readChanges(t, s, cursor, want)
			if tc.wantFirst && got[0].ChatID != olderChat.String() {
				t.Errorf("first change = %+v; want the older transaction's", got[0])
			}
			if last := got[len(got)-1]; last.Version != newer.Version {
				t.Errorf("last change = %+v; want the newer message (version %d)", last, newer.Version)
			}
			if page, _, err := s.Changes(ctx, end, 10); err != nil || len(page) != 0 {
				t.Errorf("extra changes %+v, %v", page, err)
			}
		})
	}
}

// TestWaitFallbackTickFindsUnannouncedChanges commits a feed row that no
// Store announces (as if its writer died between commit and notification):
// the fallback tick finds it.
func TestWaitFallbackTickFindsUnannouncedChanges(t *testing.T) {
	t.Parallel()
	const tick = 50 * time.Millisecond
	ctx := t.Context()
	s, pool := newStore(t, store.Options{FallbackInterval: tick})
	if _, err := s.CreateChat(ctx); err != nil {
		t.Fatal(err)
	}
	_, cursor := readChanges(t, s, "", 1)
	woke := make(chan error, 1)
	// Nothing announces this row: only the fallback tick can wake the Wait.
	// The deadline only bounds a broken tick.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	go func() { woke <- s.Wait(wctx, cursor) }()
	waitForWaiters(t, s, 1)
	if _, err := pool.Exec(ctx, `INSERT INTO changes (kind, chat_id, version, at)
        VALUES ('chat.created', $1, nextval('versions'), clock_timestamp())`, uuid.New()); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
	d := time.Since(committed)
	t.Logf("Wait found an unannounced change after %v (fallback tick %v)", d, tick)
}
