package converge_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
	"github.com/chatpoc/chat-poc/internal/converge"
)

// history is a short external history: c1 created (v1), m1 posted (v2) and
// edited (v3) in it; c2 created (v4), m2 posted in it (v5), c2 deleted (m2
// deleted with it at v6, c2 at v7). It returns the log of its
// acknowledgements and its change records, as the sync publishes them.
func history(acked time.Time) ([]loadgen.Record, chatdb.Batch) {
	rec := func(op loadgen.Op, chat, msg, content string, v int64) loadgen.Record {
		return loadgen.Record{Op: op, ChatID: chat, MessageID: msg, Content: content, Version: v, SentAt: acked, AckedAt: acked}
	}
	log := []loadgen.Record{
		rec(loadgen.OpChatCreated, "c1", "", "", 1),
		rec(loadgen.OpMessageCreated, "c1", "m1", "hi", 2),
		rec(loadgen.OpMessageUpdated, "c1", "m1", "hi, edited", 3),
		rec(loadgen.OpChatCreated, "c2", "", "", 4),
		rec(loadgen.OpMessageCreated, "c2", "m2", "bye", 5),
		rec(loadgen.OpChatDeleted, "c2", "", "", 0),
	}
	b := chatdb.Batch{
		Chats: []change.Chat{chatdbtest.ChatNew("c1", 1), chatdbtest.ChatNew("c2", 4), chatdbtest.ChatDelete("c2", 7)},
		Messages: []change.Message{
			chatdbtest.Msg("m1", "c1", 2, 2, "hi", false), chatdbtest.Msg("m1", "c1", 2, 3, "hi, edited", false),
			chatdbtest.Msg("m2", "c2", 5, 5, "bye", false), chatdbtest.Msg("m2", "c2", 5, 6, "bye", true),
		},
	}
	return log, b
}

func apply(t *testing.T, db *chatdb.DB, b chatdb.Batch) {
	t.Helper()
	if _, err := db.Apply(t.Context(), "", b); err != nil {
		t.Fatal(err)
	}
}

// TestLoadDB writes a history through chatdb.Apply, as the writer does, and
// checks that LoadDB reads it back whole, that Compare finds it converged,
// and that the chat filter leaves other chats out.
func TestLoadDB(t *testing.T) {
	t.Parallel()
	_, db, pool := chatdbtest.NewDB(t)
	log, b := history(time.Now())
	b.Chats = append(b.Chats, chatdbtest.ChatNew("other", 8))
	b.Messages = append(b.Messages, chatdbtest.Msg("o1", "other", 9, 9, "not in the log", false))
	apply(t, db, b)

	got, err := converge.LoadDB(t.Context(), pool, converge.ChatIDs(log))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Chats) != 2 || len(got.Messages) != 2 {
		t.Fatalf("read %d chats and %d messages of the log's chats, want 2 and 2: %+v", len(got.Chats), len(got.Messages), got)
	}
	i := slices.IndexFunc(got.Messages, func(m converge.MessageRow) bool { return m.ID == "m1" })
	if i < 0 {
		t.Fatalf("m1 not read: %+v", got.Messages)
	}
	if m, want := got.Messages[i], chatdbtest.Msg("m1", "c1", 2, 3, "hi, edited", false); m.Message != want ||
		m.ReplicatedAt.Location() != time.UTC || time.Since(m.ReplicatedAt).Abs() > time.Minute {
		t.Errorf("m1 read as %+v, want %+v replicated about now, in UTC", m, want)
	}
	r := converge.Compare(log, got, nil)
	if r.Failed() || len(r.Ahead) > 0 || r.Unlogged != 0 {
		t.Errorf("Compare found divergence in a converged database: %+v", r)
	}
	if r.DBLatency.All.Count != 4 {
		t.Errorf("database latency %s, want 4 samples (c1, m1, c2 and m2 deleted)", r.DBLatency.All)
	}

	all, err := converge.LoadDB(t.Context(), pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Chats) != 3 || len(all.Messages) != 3 {
		t.Errorf("read %d chats and %d messages in all, want 3 and 3", len(all.Chats), len(all.Messages))
	}
	if r := converge.Compare(log, all, nil); r.Failed() || r.Unlogged != 2 {
		t.Errorf("with every chat: failed %v, unlogged %d, want false and 2", r.Failed(), r.Unlogged)
	}
}

// TestCheck seeds a lost message, a stale one and a stream regression
// into files and a database, and checks that Check reports each.
func TestCheck(t *testing.T) {
	t.Parallel()
	_, db, pool := chatdbtest.NewDB(t)
	now := time.Now()
	log, b := history(now)
	// m3 was acknowledged but never arrives; m1's edit (v3) does not either.
	log = append(log, loadgen.Record{Op: loadgen.OpMessageCreated, ChatID: "c1", MessageID: "m3", Content: "lost", Version: 8, AckedAt: now})
	b.Messages = slices.DeleteFunc(b.Messages, func(m change.Message) bool { return m.ID == "m1" && m.Version == 3 })
	apply(t, db, b)

	dir := t.TempDir()
	logPath := filepath.Join(dir, "load.jsonl")
	if err := loadgen.WriteLog(logPath, log); err != nil {
		t.Fatal(err)
	}
	streamPath := filepath.Join(dir, "tab.jsonl")
	var stream []byte
	for i, frame := range []string{
		`{"type":"update","chatId":"c1","messages":[{"id":"m1","chatId":"c1","version":3}]}`,
		`{"type":"update","chatId":"c1","messages":[{"id":"m1","chatId":"c1","version":2}]}`,
	} {
		line, err := converge.EncodeReceived(now.Add(time.Duration(i)*time.Millisecond), 1, []byte(frame))
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, line...)
	}
	if err := os.WriteFile(streamPath, stream, 0o600); err != nil {
		t.Fatal(err)
	}

	r, err := converge.Check(t.Context(), pool, logPath, streamPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(r.Lost); !slices.Equal(got, []string{"m3"}) {
		t.Errorf("lost %v, want [m3]", got)
	}
	if got := ids(r.Stale); !slices.Equal(got, []string{"m1"}) {
		t.Errorf("stale %v, want [m1]", got)
	}
	if got := ids(r.Regressions); !slices.Equal(got, []string{"m1"}) || r.Regressions[0].Stream != streamPath || r.Regressions[0].Frame != 2 {
		t.Errorf("regressions %+v, want m1 in frame 2 of %s", r.Regressions, streamPath)
	}
	if _, err := converge.Check(t.Context(), pool, filepath.Join(dir, "missing.jsonl")); err == nil {
		t.Error("Check of a missing log succeeded")
	}
}

// TestAwait checks that Await reads again until a late write arrives, and
// gives up with the last report when the deadline passes first.
func TestAwait(t *testing.T) {
	t.Parallel()
	_, db, pool := chatdbtest.NewDB(t)
	log, b := history(time.Now())
	late := chatdb.Batch{Messages: []change.Message{chatdbtest.Msg("m1", "c1", 2, 3, "hi, edited", false)}}
	b.Messages = slices.DeleteFunc(b.Messages, func(m change.Message) bool { return m.ID == "m1" && m.Version == 3 })
	apply(t, db, b)

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	r, _, err := converge.Await(ctx, pool, log, nil, 50*time.Millisecond)
	if err != nil || r.Converged() || !slices.Equal(ids(r.Stale), []string{"m1"}) {
		t.Fatalf("Await before the late write: converged %v, stale %v, err %v; want m1 stale", r.Converged(), ids(r.Stale), err)
	}

	const delay = 200 * time.Millisecond
	go func() {
		time.Sleep(delay) // the write is late on purpose: Await must have read without it
		if _, err := db.Apply(context.Background(), "", late); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	r, waited, err := converge.Await(ctx, pool, log, nil, 50*time.Millisecond)
	if err != nil || !r.Converged() || r.Failed() {
		t.Fatalf("Await with a late write: converged %v, report %+v, err %v", r.Converged(), r, err)
	}
	if waited < delay {
		t.Errorf("converged after %s, before the late write (%s)", waited, delay)
	}

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := converge.Await(canceled, pool, log, nil, 50*time.Millisecond); err == nil {
		t.Error("Await with a canceled context returned no error")
	}
}
