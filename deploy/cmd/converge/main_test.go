package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
	"github.com/chatpoc/chat-poc/internal/converge"
)

// writeLog writes records as the load generator does and returns the path.
func writeLog(t *testing.T, records ...loadgen.Record) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "load.jsonl")
	if err := loadgen.WriteLog(path, records); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRun checks the exit statuses and outputs of a converged database, a
// seeded loss, and bad invocations.
func TestRun(t *testing.T) {
	t.Parallel()
	dsn, db, _ := chatdbtest.NewDB(t)
	if _, err := db.Apply(t.Context(), "", chatdb.Batch{
		Chats:    []change.Chat{chatdbtest.ChatNew("c1", 1)},
		Messages: []change.Message{chatdbtest.Msg("m1", "c1", 2, 2, "hi", false)},
	}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	chat := loadgen.Record{Op: loadgen.OpChatCreated, ChatID: "c1", Version: 1, AckedAt: now}
	m1 := loadgen.Record{Op: loadgen.OpMessageCreated, ChatID: "c1", MessageID: "m1", Content: "hi", Version: 2, AckedAt: now}
	m2 := loadgen.Record{Op: loadgen.OpMessageCreated, ChatID: "c1", MessageID: "m2", Content: "lost", Version: 3, AckedAt: now}
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()

	var out bytes.Buffer
	jsonPath := filepath.Join(dir, "report.json")
	code, err := run(t.Context(), log, []string{"-log", writeLog(t, chat, m1), "-dsn", dsn, "-json", jsonPath}, &out)
	if code != exitConverged || err != nil || !strings.Contains(out.String(), "convergence OK") {
		t.Errorf("converged: exit %d, err %v, output:\n%s", code, err, out.String())
	}
	var report struct {
		Acked int             `json:"acked"`
		Lost  json.RawMessage `json:"lost"`
	}
	if b, err := os.ReadFile(jsonPath); err != nil || json.Unmarshal(b, &report) != nil || report.Acked != 2 || string(report.Lost) != "[]" {
		t.Errorf("JSON report %+v (%v), want 2 acknowledged, none lost", report, err)
	}

	out.Reset()
	code, err = run(t.Context(), log, []string{"-log", writeLog(t, chat, m1, m2), "-dsn", dsn, "-json", "-", "-wait", "300ms"}, &out)
	if code != exitFindings || err != nil || !strings.Contains(out.String(), `"id": "m2"`) || strings.Contains(out.String(), "convergence") {
		t.Errorf("a lost message: exit %d, err %v, output (JSON only):\n%s", code, err, out.String())
	}

	// A tab that loaded c1 owes m1's final state: once missing, once carried.
	for _, tc := range []struct {
		frame string
		code  int
		says  string
	}{
		{`{"type":"load","chatId":"c1","messages":[]}`, exitFindings, "lost in stream: never carried; v2 was acknowledged"},
		{`{"type":"load","chatId":"c1","messages":[{"id":"m1","chatId":"c1","content":"hi","createdAt":"2025-03-04T05:06:07Z","updatedAt":"2025-03-04T05:06:07Z","isDeleted":false,"version":2}]}`,
			exitConverged, "0 lost in stream"},
	} {
		line, err := converge.EncodeReceived(now, 1, []byte(tc.frame))
		if err != nil {
			t.Fatal(err)
		}
		stream := filepath.Join(t.TempDir(), "tab.jsonl")
		if err := os.WriteFile(stream, line, 0o600); err != nil {
			t.Fatal(err)
		}
		out.Reset()
		code, err = run(t.Context(), log, []string{"-log", writeLog(t, chat, m1), "-dsn", dsn, "-stream", stream}, &out)
		if code != tc.code || err != nil || !strings.Contains(out.String(), tc.says) {
			t.Errorf("stream %s: exit %d, err %v, want %d and %q in the output:\n%s", tc.frame, code, err, tc.code, tc.says, out.String())
		}
	}

	for _, args := range [][]string{
		{"-dsn", dsn},
		{"-log", filepath.Join(dir, "missing.jsonl"), "-dsn", dsn},
		{"-log", writeLog(t, chat), "-dsn", "postgres://u:secret@[bad"},
		{"-log", writeLog(t, chat), "-dsn", dsn, "extra"},
	} {
		out.Reset()
		code, err := run(t.Context(), log, args, &out)
		if code != exitError || err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("run %q: exit %d, err %v; want %d and an error that does not show the password", args, code, err, exitError)
		}
	}
}
