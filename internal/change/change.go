// Package change defines the records the sync publishes to Kafka and its
// consumers (the writer, the internal app) read: one message's state on topic
// TopicMessages, a chat's lifecycle on TopicChats, both keyed by chat ID so
// that one chat's changes stay in order within a cluster.
//
// The JSON keeps the original proof of concept's field names (messages: id,
// chatId, content, createdAt, updatedAt, isDeleted; chats: type "new" or
// "delete", id) and adds version: the external service's version of the
// message or chat after the change. Versions totally order the changes of one
// message (and of one chat); a consumer applies a record only if its version
// is newer than what it holds, which makes duplicates, replays and mirrored
// copies harmless.
package change

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Topics the sync publishes to. MirrorMaker 2 copies each to the other
// region's cluster under the source cluster's prefix ("a.chat-messages" on
// cluster b), so a consumer of one region reads both names.
const (
	TopicMessages = "chat-messages"
	TopicChats    = "chats"
)

// Header keys set on every record, so consumers can route or drop a record
// without parsing its value.
const (
	HeaderKind    = "kind"    // the external feed's change kind, e.g. "message.updated"
	HeaderVersion = "version" // the version, in decimal
	HeaderWorker  = "worker"  // identity of the sync worker that published the record (for tracing)
	HeaderAttempt = "attempt" // the publishing activity attempt: workflow run ID/activity ID#attempt (for tracing)
)

// ChatType says what happened to a chat.
type ChatType string

// The chat lifecycle events, as the original named them.
const (
	ChatNew    ChatType = "new"
	ChatDelete ChatType = "delete"
)

// MaxContentBytes bounds a message's content on the wire; the external
// service accepts less, so a larger one is malformed.
const MaxContentBytes = 64 << 10

// MaxIDBytes bounds a chat's or a message's ID. The external service's IDs
// are UUIDs; an ID longer than this, or with other characters than
// letters, digits and "-_.:", is malformed: it cannot be an index key in
// Postgres (one record with a 10 kB ID stopped every writer, in both
// regions), and it has no business in a URL or a Redis key either.
const MaxIDBytes = 128

// checkID reports whether id (what names it: "message", "chat") is present
// and well formed (see MaxIDBytes). The error quotes a malformed ID only
// when it is short.
func checkID(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: %s without id", ErrInvalid, what)
	case len(id) > MaxIDBytes:
		return fmt.Errorf("%w: %s id of %d bytes, more than %d", ErrInvalid, what, len(id), MaxIDBytes)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return fmt.Errorf("%w: %s id %q: byte %#02x at %d is not a letter, a digit or one of -_.:", ErrInvalid, what, id, c, i)
		}
	}
	return nil
}

// Message is a message's state after a change: the value of a TopicMessages
// record.
type Message struct {
	ID        string    `json:"id"`
	ChatID    string    `json:"chatId"`
	Content   string    `json:"content"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	IsDeleted bool      `json:"isDeleted"`
	Version   int64     `json:"version"`
}

// Chat is a chat lifecycle event: the value of a TopicChats record.
type Chat struct {
	Type    ChatType `json:"type"`
	ID      string   `json:"id"`
	Version int64    `json:"version"`
}

// ErrInvalid is wrapped by the errors of Validate and the decoders.
var ErrInvalid = errors.New("invalid change record")

// Validate reports whether m can be applied: well-formed IDs, a positive
// version, timestamps set, content within MaxContentBytes that passes
// CheckText.
func (m Message) Validate() error {
	if err := checkID("message", m.ID); err != nil {
		return err
	}
	if err := checkID("message "+m.ID+"'s chat", m.ChatID); err != nil {
		return err
	}
	switch {
	case m.Version <= 0:
		return fmt.Errorf("%w: message %s with version %d", ErrInvalid, m.ID, m.Version)
	case m.CreatedAt.IsZero() || m.UpdatedAt.IsZero():
		return fmt.Errorf("%w: message %s without createdAt/updatedAt", ErrInvalid, m.ID)
	case len(m.Content) > MaxContentBytes:
		return fmt.Errorf("%w: message %s content of %d bytes", ErrInvalid, m.ID, len(m.Content))
	}
	if err := CheckText(m.Content); err != nil {
		return fmt.Errorf("%w: message %s content: %w", ErrInvalid, m.ID, err)
	}
	return nil
}

// CheckText reports whether s is text every store of ours keeps as it is:
// valid UTF-8 (Go's JSON encoder would replace the rest, Postgres rejects
// it) without NUL bytes (JSON's \u0000 decodes to one; Postgres's text
// cannot hold it). Its errors do not quote s.
func CheckText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("text is not valid UTF-8")
	}
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("text contains a NUL byte at %d", i)
	}
	return nil
}

// Validate reports whether c can be applied: a known type, a well-formed
// ID and a positive version.
func (c Chat) Validate() error {
	if c.Type != ChatNew && c.Type != ChatDelete {
		return fmt.Errorf("%w: chat event type %.40q", ErrInvalid, c.Type)
	}
	if err := checkID("chat event", c.ID); err != nil {
		return err
	}
	switch {
	case c.Version <= 0:
		return fmt.Errorf("%w: chat %s with version %d", ErrInvalid, c.ID, c.Version)
	}
	return nil
}

// DecodeMessage parses and validates a TopicMessages record value.
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return m, m.Validate()
}

// DecodeChat parses and validates a TopicChats record value.
func DecodeChat(b []byte) (Chat, error) {
	var c Chat
	if err := json.Unmarshal(b, &c); err != nil {
		return Chat{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return c, c.Validate()
}

// FormatVersion is the HeaderVersion value of version v.
func FormatVersion(v int64) []byte { return strconv.AppendInt(nil, v, 10) }
