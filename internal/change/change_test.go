package change_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/internal/change"
)

func TestDecodeValidatesRecords(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC).Format(time.RFC3339Nano)
	big := strings.Repeat("x", change.MaxContentBytes+1)
	for _, tc := range []struct {
		name, value string
		chat, ok    bool
	}{
		{name: "message", value: `{"id":"m","chatId":"c","content":"hi","createdAt":"` + at + `","updatedAt":"` + at + `","isDeleted":false,"version":3}`, ok: true},
		{name: "message without id", value: `{"chatId":"c","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`},
		{name: "message without chat", value: `{"id":"m","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`},
		{name: "message without version", value: `{"id":"m","chatId":"c","createdAt":"` + at + `","updatedAt":"` + at + `"}`},
		{name: "message without timestamps", value: `{"id":"m","chatId":"c","version":3}`},
		{name: "message too large", value: `{"id":"m","chatId":"c","content":"` + big + `","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`},
		{name: "message not JSON", value: `{"id":`},
		{name: "message content with a NUL", value: `{"id":"m","chatId":"c","content":"a\u0000b","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`},
		{name: "message content not ASCII", value: `{"id":"m","chatId":"c","content":"caf\u00e9 \ud83d\ude00","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`, ok: true},
		{name: "message with a UUID and a longest id", value: `{"id":"` + strings.Repeat("m", change.MaxIDBytes) + `","chatId":"0b7e4f2a-5d1c-4c8e-9f3a-2b6d8e1c4a70","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`, ok: true},
		{name: "message with a 10 kB id", value: `{"id":"` + strings.Repeat("m", 10_000) + `","chatId":"c","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`},
		{name: "message with an id one byte too long", value: `{"id":"` + strings.Repeat("m", change.MaxIDBytes+1) + `","chatId":"c","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`},
		{name: "message with a 10 kB chat id", value: `{"id":"m","chatId":"` + strings.Repeat("c", 10_000) + `","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`},
		{name: "message id with a space", value: `{"id":"m 1","chatId":"c","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`},
		{name: "message id with a NUL", value: `{"id":"m\u0000","chatId":"c","createdAt":"` + at + `","updatedAt":"` + at + `","version":3}`},
		{name: "chat id with a slash", value: `{"type":"new","id":"c/../x","version":1}`, chat: true},
		{name: "chat id not ASCII", value: `{"type":"new","id":"caf\u00e9","version":1}`, chat: true},
		{name: "chat with a 10 kB id", value: `{"type":"new","id":"` + strings.Repeat("c", 10_000) + `","version":1}`, chat: true},
		{name: "chat new", value: `{"type":"new","id":"c","version":1}`, chat: true, ok: true},
		{name: "chat delete", value: `{"type":"delete","id":"c","version":9}`, chat: true, ok: true},
		{name: "chat of unknown type", value: `{"type":"rename","id":"c","version":1}`, chat: true},
		{name: "chat without id", value: `{"type":"new","version":1}`, chat: true},
		{name: "chat with version 0", value: `{"type":"new","id":"c","version":0}`, chat: true},
		{name: "chat not JSON", value: `[]`, chat: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var err error
			if tc.chat {
				_, err = change.DecodeChat([]byte(tc.value))
			} else {
				_, err = change.DecodeMessage([]byte(tc.value))
			}
			switch {
			case tc.ok && err != nil:
				t.Errorf("rejected: %v", err)
			case !tc.ok && !errors.Is(err, change.ErrInvalid):
				t.Errorf("err = %v, want one wrapping ErrInvalid", err)
			}
		})
	}
}

// TestValidateChecksContentText: JSON decoding cannot yield invalid UTF-8
// (it substitutes U+FFFD), but a Message built from another source can.
func TestValidateChecksContentText(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		content string
		ok      bool
	}{
		{"hello", true},
		{"caf\u00e9", true},
		{"", true},
		{"bad \xff\xfe bytes", false},
		{"cut \xe2\x82", false},
		{"nul \x00 byte", false},
	} {
		m := change.Message{ID: "m", ChatID: "c", Content: tc.content, CreatedAt: at, UpdatedAt: at, Version: 1}
		err := m.Validate()
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, change.ErrInvalid)) {
			t.Errorf("Validate(content %q) = %v, want ok %t", tc.content, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), tc.content) {
			t.Errorf("error quotes the content: %v", err)
		}
	}
}

func TestFormatVersion(t *testing.T) {
	t.Parallel()
	if got := string(change.FormatVersion(9007199254740993)); got != "9007199254740993" {
		t.Errorf("FormatVersion = %q", got)
	}
}
