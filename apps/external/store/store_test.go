package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/chatpoc/chat-poc/apps/external/store"
)

func TestCreateChatAndList(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, store.Options{})
	ctx := t.Context()

	ids, err := s.ChatIDs(ctx)
	if err != nil || len(ids) != 0 {
		t.Fatalf("ChatIDs of an empty store = %v, %v; want none", ids, err)
	}
	before := time.Now()
	var want []string
	var lastVersion int64
	for range 3 {
		c, err := s.CreateChat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := uuid.Parse(c.ID); err != nil {
			t.Errorf("chat ID %q is not a UUID", c.ID)
		}
		if c.IsDeleted || c.Version <= lastVersion {
			t.Errorf("new chat %+v: want not deleted, version above %d", c, lastVersion)
		}
		if d := c.CreatedAt.Sub(before); d < -time.Minute || d > time.Minute {
			t.Errorf("CreatedAt %v is not the server's current time (client %v)", c.CreatedAt, before)
		}
		got, err := s.Chat(ctx, c.ID)
		if err != nil || !got.CreatedAt.Equal(c.CreatedAt) || got.ID != c.ID || got.Version != c.Version || got.IsDeleted {
			t.Errorf("Chat(%s) = %+v, %v; want %+v", c.ID, got, err, c)
		}
		lastVersion = c.Version
		want = append(want, c.ID)
	}
	if ids, err = s.ChatIDs(ctx); err != nil || !slices.Equal(ids, want) {
		t.Fatalf("ChatIDs = %v, %v; want %v (creation order)", ids, err, want)
	}
	if err := s.DeleteChat(ctx, want[1]); err != nil {
		t.Fatal(err)
	}
	if ids, err = s.ChatIDs(ctx); err != nil || !slices.Equal(ids, []string{want[0], want[2]}) {
		t.Fatalf("ChatIDs after deleting %s = %v, %v; want the other two", want[1], ids, err)
	}
	deleted, err := s.Chat(ctx, want[1])
	if err != nil || !deleted.IsDeleted || deleted.Version <= lastVersion {
		t.Fatalf("deleted chat = %+v, %v; want IsDeleted and a version above %d", deleted, err, lastVersion)
	}
}

func TestMessageLifecycle(t *testing.T) {
	t.Parallel()
	s, chat := newStoreWithChat(t)
	ctx := t.Context()
	if msgs, err := s.Messages(ctx, chat.ID); err != nil || len(msgs) != 0 {
		t.Fatalf("Messages of a new chat = %v, %v; want an empty list", msgs, err)
	}

	m1, err := s.CreateMessage(ctx, chat.ID, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if m1.ChatID != chat.ID || m1.Content != "hello" || m1.IsDeleted || m1.Version <= chat.Version ||
		!m1.CreatedAt.Equal(m1.UpdatedAt) {
		t.Fatalf("created message %+v", m1)
	}
	m2, err := s.CreateMessage(ctx, chat.ID, "second ✓")
	if err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name    string
		do      func() (store.Message, error)
		content string
		deleted bool
	}{
		{"first edit", func() (store.Message, error) { return s.UpdateMessage(ctx, chat.ID, m1.ID, "hello, edited") }, "hello, edited", false},
		{"second edit", func() (store.Message, error) { return s.UpdateMessage(ctx, chat.ID, m1.ID, "") }, "", false},
		{"delete keeps the content", func() (store.Message, error) { return s.DeleteMessage(ctx, chat.ID, m1.ID) }, "", true},
	}
	prev := m1
	for _, step := range steps {
		got, err := step.do()
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got.ID != m1.ID || got.ChatID != chat.ID || got.Content != step.content || got.IsDeleted != step.deleted {
			t.Errorf("%s: got %+v, want content %q deleted %v", step.name, got, step.content, step.deleted)
		}
		if got.Version <= prev.Version {
			t.Errorf("%s: version %d, not above the previous %d", step.name, got.Version, prev.Version)
		}
		if !got.CreatedAt.Equal(m1.CreatedAt) || got.UpdatedAt.Before(prev.UpdatedAt) {
			t.Errorf("%s: createdAt %v updatedAt %v; want createdAt unchanged, updatedAt not before %v",
				step.name, got.CreatedAt, got.UpdatedAt, prev.UpdatedAt)
		}
		prev = got
	}

	msgs, err := s.Messages(ctx, chat.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || !equalMessage(msgs[0], prev) || !equalMessage(msgs[1], m2) {
		t.Fatalf("Messages = %+v; want the deleted first message and then the second", msgs)
	}
}

func equalMessage(a, b store.Message) bool {
	return a.ID == b.ID && a.ChatID == b.ChatID && a.Content == b.Content && a.IsDeleted == b.IsDeleted &&
		a.Version == b.Version && a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt)
}

func TestDeleteChatDeletesItsMessages(t *testing.T) {
	t.Parallel()
	s, chat := newStoreWithChat(t)
	ctx := t.Context()
	other, err := s.CreateChat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []store.Message
	for _, content := range []string{"a", "b", "c"} {
		m, err := s.CreateMessage(ctx, chat.ID, content)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	otherMsg, err := s.CreateMessage(ctx, other.ID, "elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	alreadyDeleted, err := s.DeleteMessage(ctx, chat.ID, msgs[1].ID)
	if err != nil {
		t.Fatal(err)
	}
	_, cursor := readChanges(t, s, "", 7)

	if err := s.DeleteChat(ctx, chat.ID); err != nil {
		t.Fatal(err)
	}

	got, err := s.Messages(ctx, chat.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range got {
		if !m.IsDeleted || m.Content != msgs[i].Content {
			t.Errorf("message %d after DeleteChat = %+v; want deleted with its content kept", i, m)
		}
	}
	if !equalMessage(got[1], alreadyDeleted) {
		t.Errorf("the message deleted before the chat changed again: %+v, was %+v", got[1], alreadyDeleted)
	}
	if o, err := s.Messages(ctx, other.ID); err != nil || len(o) != 1 || !equalMessage(o[0], otherMsg) {
		t.Errorf("the other chat's messages changed: %+v, %v", o, err)
	}

	// The feed: one message.deleted per message that was not deleted yet,
	// in version order, then chat.deleted.
	changes, _ := readChanges(t, s, cursor, 3)
	want := []struct {
		kind store.ChangeKind
		msg  string
	}{{store.KindMessageDeleted, msgs[0].ID}, {store.KindMessageDeleted, msgs[2].ID}, {store.KindChatDeleted, ""}}
	var prev int64
	for i, c := range changes {
		msgID := ""
		if c.Message != nil {
			msgID = c.Message.ID
			if !c.Message.IsDeleted || c.Message.Version != c.Version {
				t.Errorf("change %d carries %+v", i, c.Message)
			}
		}
		if c.Kind != want[i].kind || msgID != want[i].msg || c.ChatID != chat.ID || c.Version <= prev {
			t.Errorf("change %d = %+v (message %q); want %s of %q with a version above %d", i, c, msgID, want[i].kind, want[i].msg, prev)
		}
		prev = c.Version
	}
	if deleted, err := s.Chat(ctx, chat.ID); err != nil || deleted.Version != prev {
		t.Errorf("deleted chat %+v, %v; want the chat.deleted version %d", deleted, err, prev)
	}
}

// TestNotFound covers every way a read or write can miss.
func TestNotFound(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, store.Options{})
	ctx := t.Context()
	mustChat := func() store.Chat {
		c, err := s.CreateChat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	mustMessage := func(chatID string) store.Message {
		m, err := s.CreateMessage(ctx, chatID, "x")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	chat, other, gone := mustChat(), mustChat(), mustChat()
	msg, deletedMsg, otherMsg, goneMsg := mustMessage(chat.ID), mustMessage(chat.ID), mustMessage(other.ID), mustMessage(gone.ID)
	if _, err := s.DeleteMessage(ctx, chat.ID, deletedMsg.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteChat(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	unknown := uuid.NewString()

	cases := []struct {
		name string
		do   func(context.Context) error
	}{
		{"Chat of an unknown ID", func(ctx context.Context) error { _, err := s.Chat(ctx, unknown); return err }},
		{"Chat of a malformed ID", func(ctx context.Context) error { _, err := s.Chat(ctx, "not-a-uuid"); return err }},
		{"Messages of an unknown chat", func(ctx context.Context) error { _, err := s.Messages(ctx, unknown); return err }},
		{"Messages of a malformed chat ID", func(ctx context.Context) error { _, err := s.Messages(ctx, "1; DROP TABLE chats"); return err }},
		{"DeleteChat of an unknown chat", func(ctx context.Context) error { return s.DeleteChat(ctx, unknown) }},
		{"DeleteChat of a deleted chat", func(ctx context.Context) error { return s.DeleteChat(ctx, gone.ID) }},
		{"DeleteChat of a malformed ID", func(ctx context.Context) error { return s.DeleteChat(ctx, "") }},
		{"CreateMessage in an unknown chat", func(ctx context.Context) error { _, err := s.CreateMessage(ctx, unknown, "x"); return err }},
		{"CreateMessage in a deleted chat", func(ctx context.Context) error { _, err := s.CreateMessage(ctx, gone.ID, "x"); return err }},
		{"CreateMessage in a malformed chat ID", func(ctx context.Context) error { _, err := s.CreateMessage(ctx, "chat", "x"); return err }},
		{"UpdateMessage of an unknown message", func(ctx context.Context) error { _, err := s.UpdateMessage(ctx, chat.ID, unknown, "y"); return err }},
		{"UpdateMessage of another chat's message", func(ctx context.Context) error {
			_, err := s.UpdateMessage(ctx, chat.ID, otherMsg.ID, "y")
			return err
		}},
		{"UpdateMessage of a deleted message", func(ctx context.Context) error {
			_, err := s.UpdateMessage(ctx, chat.ID, deletedMsg.ID, "y")
			return err
		}},
		{"UpdateMessage in a deleted chat", func(ctx context.Context) error { _, err := s.UpdateMessage(ctx, gone.ID, goneMsg.ID, "y"); return err }},
		{"UpdateMessage with a malformed message ID", func(ctx context.Context) error { _, err := s.UpdateMessage(ctx, chat.ID, "m", "y"); return err }},
		{"UpdateMessage with a malformed chat ID", func(ctx context.Context) error { _, err := s.UpdateMessage(ctx, "c", msg.ID, "y"); return err }},
		{"DeleteMessage of an unknown message", func(ctx context.Context) error { _, err := s.DeleteMessage(ctx, chat.ID, unknown); return err }},
		{"DeleteMessage of another chat's message", func(ctx context.Context) error {
			_, err := s.DeleteMessage(ctx, chat.ID, otherMsg.ID)
			return err
		}},
		{"DeleteMessage of a deleted message", func(ctx context.Context) error {
			_, err := s.DeleteMessage(ctx, chat.ID, deletedMsg.ID)
			return err
		}},
		{"DeleteMessage in a deleted chat", func(ctx context.Context) error { _, err := s.DeleteMessage(ctx, gone.ID, goneMsg.ID); return err }},
	}
	_, cursor := readChanges(t, s, "", 10)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mustNotFound(t, tc.do(t.Context()))
		})
	}
	// Misses change nothing: the feed got nothing new, the message is intact.
	page, next, err := s.Changes(ctx, cursor, 10)
	if err != nil || len(page) != 0 || next != cursor {
		t.Errorf("feed after the misses: %d changes, %v", len(page), err)
	}
	if msgs, err := s.Messages(ctx, chat.ID); err != nil || !equalMessage(msgs[0], msg) {
		t.Errorf("message after the misses = %+v, %v; want %+v", msgs, err, msg)
	}
}

func TestContentThatIsNotTextIsRejected(t *testing.T) {
	t.Parallel()
	s, chat := newStoreWithChat(t)
	ctx := t.Context()
	m, err := s.CreateMessage(ctx, chat.ID, "fine")
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"NUL": "a\x00b", "invalid UTF-8": "a\xffb"} {
		t.Run(name, func(t *testing.T) {
			if _, err := s.CreateMessage(ctx, chat.ID, content); !errors.Is(err, store.ErrBadContent) {
				t.Errorf("CreateMessage err = %v, want ErrBadContent", err)
			}
			if _, err := s.UpdateMessage(ctx, chat.ID, m.ID, content); !errors.Is(err, store.ErrBadContent) {
				t.Errorf("UpdateMessage err = %v, want ErrBadContent", err)
			}
		})
	}
	if msgs, err := s.Messages(ctx, chat.ID); err != nil || len(msgs) != 1 || !equalMessage(msgs[0], m) {
		t.Fatalf("messages after rejected writes = %+v, %v; want only the first, unchanged", msgs, err)
	}
}

func TestJSONNames(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := store.Change{Kind: store.KindMessageUpdated, ChatID: "c", Version: 7, At: at,
		Message: &store.Message{ID: "m", ChatID: "c", Content: "hi", CreatedAt: at, UpdatedAt: at, IsDeleted: true, Version: 7}}
	cases := []struct {
		name string
		v    any
		want string
	}{
		{"message change", c, `{"kind":"message.updated","chatId":"c","message":{"id":"m","chatId":"c","content":"hi",` +
			`"createdAt":"2026-01-02T03:04:05Z","updatedAt":"2026-01-02T03:04:05Z","isDeleted":true,"version":7},` +
			`"version":7,"at":"2026-01-02T03:04:05Z"}`},
		{"chat change omits message", store.Change{Kind: store.KindChatDeleted, ChatID: "c", Version: 8, At: at},
			`{"kind":"chat.deleted","chatId":"c","version":8,"at":"2026-01-02T03:04:05Z"}`},
		{"chat", store.Chat{ID: "c", CreatedAt: at, Version: 1},
			`{"id":"c","createdAt":"2026-01-02T03:04:05Z","isDeleted":false,"version":1}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.v)
			if err != nil || string(b) != tc.want {
				t.Errorf("json = %s, %v\nwant   %s", b, err, tc.want)
			}
		})
	}
}
