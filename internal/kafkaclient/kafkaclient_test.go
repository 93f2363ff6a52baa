package kafkaclient_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/internal/kafkaclient"
)

func TestForwardLogsLevels(t *testing.T) {
	t.Parallel()
	lines := []kafka.LogEvent{
		{Tag: "FATAL", Level: 0, Message: "fenced"},
		{Tag: "FAIL", Level: 3, Message: "Connect to 127.0.0.1:9092 failed: Connection refused"},
		{Tag: "CGRPJOINSTATE", Level: 7, Message: "wait-join -> wait-sync"},
	}
	for _, tc := range []struct {
		name  string
		debug bool
		want  []string // the slog level of each line, in order
	}{
		{"without debug contexts", false, []string{"ERROR", "DEBUG", "DEBUG"}},
		{"with debug contexts", true, []string{"ERROR", "INFO", "INFO"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf syncBuffer
			ch := make(chan kafka.LogEvent, len(lines))
			for _, l := range lines {
				ch <- l
			}
			close(ch)
			kafkaclient.ForwardLogs(ch, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), tc.debug)
			deadline := time.Now().Add(10 * time.Second)
			for strings.Count(buf.String(), "\n") < len(lines) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond) // the forwarder's goroutine drains the channel
			}
			got := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(got) != len(lines) {
				t.Fatalf("logged %d lines, want %d:\n%s", len(got), len(lines), buf.String())
			}
			for i, line := range got {
				if !strings.Contains(line, "level="+tc.want[i]) || !strings.Contains(line, "tag="+lines[i].Tag) {
					t.Errorf("line %d: %s, want level %s", i, line, tc.want[i])
				}
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the forwarder's goroutine and the
// test's reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
