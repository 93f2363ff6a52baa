package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// TestMismatch checks the rules by which a stored offset is found not to
// belong to its partition's log, including the cases a running test cannot
// stage reliably (a topic created again that has grown past the stored
// offset, records deleted by retention before they were read).
func TestMismatch(t *testing.T) {
	t.Parallel()
	k := partitionKey{"chat-messages", 2}
	for _, tc := range []struct {
		name   string
		stored chatdb.Offset
		log    logState
		want   string // a part of the reason; "" for a match
	}{
		{"nothing stored", chatdb.Offset{Next: chatdb.NoOffset, TopicID: "x"}, logState{"y", 5, 9}, ""},
		{"inside the log", chatdb.Offset{Next: 7, TopicID: "x"}, logState{"x", 5, 9}, ""},
		{"at the log's end", chatdb.Offset{Next: 9, TopicID: "x"}, logState{"x", 0, 9}, ""},
		{"at the log's start", chatdb.Offset{Next: 5}, logState{"x", 5, 9}, ""},
		{"stored without an ID", chatdb.Offset{Next: 7}, logState{"x", 0, 9}, ""},
		{"nothing known of the log", chatdb.Offset{Next: 7, TopicID: "x"}, logState{"", -1, -1}, ""},
		{"created again and grown past the offset", chatdb.Offset{Next: 7, TopicID: "x"}, logState{"y", 0, 90}, "created again"},
		{"created again, shorter", chatdb.Offset{Next: 7, TopicID: "x"}, logState{"y", 0, 2}, "created again"},
		{"past the end, ID unknown", chatdb.Offset{Next: 7}, logState{"x", 0, 2}, "past the log's end"},
		{"deleted unread", chatdb.Offset{Next: 3, TopicID: "x"}, logState{"x", 5, 9}, "records 3 to 4 were deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := mismatch(k, tc.stored, tc.log)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("mismatch = %v, want none", err)
			case tc.want != "" && (!errors.Is(err, ErrLogMismatch) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("mismatch = %v, want ErrLogMismatch saying %q", err, tc.want)
			}
		})
	}
}
