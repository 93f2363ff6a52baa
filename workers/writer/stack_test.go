package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// TestStackWritesExternalChangesToPostgres drives the shared stack's
// external service with the load generator and waits until the stack's
// own pipeline — its sync workers, Kafka clusters, MirrorMaker 2 and
// writers — has written every acknowledged write's outcome to the stack's
// internal database: each message at its last acknowledged version,
// deleted when it or its chat was.
func TestStackWritesExternalChangesToPostgres(t *testing.T) {
	t.Parallel()
	stack := stacktest.Connect(t)
	db := chatdb.New(stacktest.Pool(t, stacktest.Env(t, stack, devstack.EnvPGPrimaryDSN), 4))
	var log loadgen.MemoryRecorder
	stats, err := loadgen.Run(context.Background(), loadgen.Config{
		BaseURL: stacktest.Env(t, stack, devstack.EnvExternalURL),
		Rate:    100, MaxOps: 300, Chats: 8, Concurrency: 4,
	}, &log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("load: %d writes attempted, %d acknowledged in %s", stats.Attempted, stats.Acked, stats.Elapsed.Round(time.Millisecond))

	type want struct {
		version int64
		content string
		deleted bool
	}
	// chat -> message -> its last acknowledged state; messages reach only
	// chats whose creation was acknowledged.
	msgs := map[string]map[string]want{}
	deletedChats := map[string]bool{}
	for _, r := range log.Records() {
		switch r.Op {
		case loadgen.OpChatCreated:
			msgs[r.ChatID] = map[string]want{}
		case loadgen.OpChatDeleted:
			deletedChats[r.ChatID] = true
		// A delete is final, and its response carries no version; so is a
		// chat's delete, which deletes its messages with versions of their
		// own.
		case loadgen.OpMessageDeleted:
			w := msgs[r.ChatID][r.MessageID]
			w.deleted = true
			msgs[r.ChatID][r.MessageID] = w
		case loadgen.OpMessageCreated, loadgen.OpMessageUpdated:
			if w := msgs[r.ChatID][r.MessageID]; !w.deleted && r.Version > w.version {
				msgs[r.ChatID][r.MessageID] = want{r.Version, r.Content, false}
			}
		}
	}
	if len(msgs) == 0 {
		t.Fatal("the load generator acknowledged no chat")
	}
	stacktest.WaitFor(t, convergeDeadline, "the stack's database to hold every acknowledged write", func() error {
		var errs []error
		for chat, wantMsgs := range msgs {
			got, deleted, err := db.Messages(context.Background(), chat)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if deleted != deletedChats[chat] {
				errs = append(errs, fmt.Errorf("chat %s deleted = %v, want %v", chat, deleted, deletedChats[chat]))
			}
			byID := map[string]int{}
			for i, m := range got {
				byID[m.ID] = i
			}
			for id, w := range wantMsgs {
				i, ok := byID[id]
				switch {
				case !ok:
					errs = append(errs, fmt.Errorf("message %s of chat %s missing", id, chat))
				case !w.deleted && !deletedChats[chat] && got[i].Version != w.version:
					errs = append(errs, fmt.Errorf("message %s at version %d, want %d", id, got[i].Version, w.version))
				case got[i].IsDeleted != (w.deleted || deletedChats[chat]):
					errs = append(errs, fmt.Errorf("message %s deleted = %v, want %v", id, got[i].IsDeleted, !got[i].IsDeleted))
				case !w.deleted && !deletedChats[chat] && got[i].Content != w.content:
					errs = append(errs, fmt.Errorf("message %s content %q, want %q", id, got[i].Content, w.content))
				}
			}
		}
		if len(errs) > 5 {
			errs = append(errs[:5], fmt.Errorf("and %d more", len(errs)-5))
		}
		return errors.Join(errs...)
	})
	t.Logf("%d acknowledged writes in %d chats are in the stack's internal database", log.Len(), len(msgs))
}
