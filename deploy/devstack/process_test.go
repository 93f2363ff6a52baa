package devstack

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A process that ignores SIGTERM past its grace gets SIGQUIT before
// SIGKILL, and what it writes on SIGQUIT (a Go service: every goroutine's
// stack) is kept in its log; a process that ignores SIGQUIT too is killed.
func TestTerminateQuitsAHungProcessBeforeKillingIt(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, script, wantErr, wantLog string
	}{
		{"writes its stacks on SIGQUIT", `trap '' TERM; trap 'echo stacks-$((1+1)); exit 2' QUIT; echo traps-$((6*7)); while :; do sleep 0.1; done`,
			"its stacks are in its log", "stacks-2"},
		{"ignores SIGQUIT too", `trap '' TERM QUIT; echo traps-$((6*7)); while :; do sleep 0.1; done`, "then killed", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			log := filepath.Join(dir, "hung.log")
			p, err := startProc(procSpec{name: "hung", path: "/bin/bash", args: []string{"-c", tt.script}, dir: dir,
				logPath: log, pidPath: filepath.Join(dir, "hung.pid")})
			if err != nil {
				t.Fatal(err)
			}
			// The traps are set once it prints traps-42 (not in the
			// script's text, which the log's first line quotes).
			for deadline := time.Now().Add(10 * time.Second); ; {
				if data, _ := os.ReadFile(log); strings.Contains(string(data), "traps-42") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the script never set its traps")
				}
				time.Sleep(10 * time.Millisecond)
			}
			err = p.terminate(context.Background(), 300*time.Millisecond)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("terminate = %v, want an error saying %q", err, tt.wantErr)
			}
			data, _ := os.ReadFile(log)
			if !strings.Contains(string(data), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, data)
			}
		})
	}
}
