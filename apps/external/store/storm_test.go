package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/store"
)

// ack is a change a writer saw acknowledged by the store.
type ack struct {
	kind    store.ChangeKind
	chatID  string
	msgID   string
	version int64 // 0 for chat.deleted: DeleteChat returns no version
	content string
}

// world is what the writers know about live chats and messages, so that most
// operations hit something that exists and concurrent writers collide on the
// same chats and messages.
type world struct {
	mu    sync.Mutex
	chats []string            // live chats, oldest first
	msgs  map[string][]string // live messages per chat
}

const hotChats = 24 // writers pick among the newest hotChats chats

func (w *world) pickChat(r *rand.Rand) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.chats) == 0 {
		return "", false
	}
	lo := max(0, len(w.chats)-hotChats)
	return w.chats[lo+r.IntN(len(w.chats)-lo)], true
}

func (w *world) pickMessage(r *rand.Rand) (chatID, msgID string, ok bool) {
	chatID, ok = w.pickChat(r)
	if !ok {
		return "", "", false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ms := w.msgs[chatID]
	if len(ms) == 0 {
		return "", "", false
	}
	return chatID, ms[r.IntN(len(ms))], true
}

func (w *world) liveChats() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.chats)
}

func (w *world) addChat(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.chats = append(w.chats, id)
}

func (w *world) removeChat(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, c := range w.chats {
		if c == id {
			w.chats = append(w.chats[:i], w.chats[i+1:]...)
			break
		}
	}
	delete(w.msgs, id)
}

func (w *world) addMessage(chatID, id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hasChat(chatID) { // not deleted since
		w.msgs[chatID] = append(w.msgs[chatID], id)
	}
}

func (w *world) hasChat(id string) bool {
	for _, c := range w.chats {
		if c == id {
			return true
		}
	}
	return false
}

func (w *world) removeMessage(chatID, id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ms := w.msgs[chatID]
	for i, m := range ms {
		if m == id {
			w.msgs[chatID] = append(ms[:i], ms[i+1:]...)
			return
		}
	}
}

// writeStorm runs ops operations on s with a realistic mix and returns the
// changes the store acknowledged and how many operations missed (ErrNotFound
// because another writer deleted the target first).
func writeStorm(ctx context.Context, s *store.Store, w *world, r *rand.Rand, ops int) ([]ack, int, error) {
	var acks []ack
	misses := 0
	for i := range ops {
		p := r.IntN(100)
		var err error
		switch {
		case p < 4 || w.liveChats() < hotChats/2:
			var c store.Chat
			if c, err = s.CreateChat(ctx); err == nil {
				acks = append(acks, ack{kind: store.KindChatCreated, chatID: c.ID, version: c.Version})
				w.addChat(c.ID)
			}
		case p < 5:
			chatID, ok := w.pickChat(r)
			if !ok {
				continue
			}
			if err = s.DeleteChat(ctx, chatID); err == nil {
				acks = append(acks, ack{kind: store.KindChatDeleted, chatID: chatID})
				w.removeChat(chatID)
			}
		case p < 45:
			chatID, ok := w.pickChat(r)
			if !ok {
				continue
			}
			var m store.Message
			content := fmt.Sprintf("op %d", i)
			if m, err = s.CreateMessage(ctx, chatID, content); err == nil {
				acks = append(acks, ack{store.KindMessageCreated, chatID, m.ID, m.Version, content})
				w.addMessage(chatID, m.ID)
			}
		case p < 85:
			chatID, msgID, ok := w.pickMessage(r)
			if !ok {
				continue
			}
			var m store.Message
			content := fmt.Sprintf("edit %d", i)
			if m, err = s.UpdateMessage(ctx, chatID, msgID, content); err == nil {
				acks = append(acks, ack{store.KindMessageUpdated, chatID, msgID, m.Version, content})
			}
		default:
			chatID, msgID, ok := w.pickMessage(r)
			if !ok {
				continue
			}
			var m store.Message
			if m, err = s.DeleteMessage(ctx, chatID, msgID); err == nil {
				acks = append(acks, ack{store.KindMessageDeleted, chatID, msgID, m.Version, m.Content})
				w.removeMessage(chatID, msgID)
			}
		}
		switch {
		case errors.Is(err, store.ErrNotFound):
			misses++
		case err != nil:
			return acks, misses, err
		}
	}
	return acks, misses, nil
}

// feedRow is a change as the feed table holds it, for comparing with what
// the poller read.
type feedRow struct {
	kind    store.ChangeKind
	chatID  string
	msgID   string
	version int64
}

func rowOf(c store.Change) feedRow {
	r := feedRow{kind: c.Kind, chatID: c.ChatID, version: c.Version}
	if c.Message != nil {
		r.msgID = c.Message.ID
	}
	return r
}

// TestFeedDeliversEveryCommittedChangeExactlyOnce is the feed's proof: 16
// writers commit 32,000 operations concurrently (so their transactions commit
// out of order) while a poller follows the feed with small pages and Wait.
// The poller's stream must be exactly the feed table's rows, each once, in
// feed order, contain every acknowledged change, order every message's and
// every chat's changes by strictly increasing version, and replay into the
// store's final state.
func TestFeedDeliversEveryCommittedChangeExactlyOnce(t *testing.T) {
	const (
		writers  = 16
		ops      = 2000
		pageSize = 7
	)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	s, pool := openStore(t, freshDSN(t), writers+4, store.Options{})

	var (
		// total is the number of feed rows once the writers are done (-1
		// before): the poller drains until it has seen that many. A skipped
		// change never arrives, so the poller then runs into ctx's deadline
		// and the test fails instead of stopping early on a quiet spell.
		total       atomic.Int64
		stream      []store.Change
		firstCursor string // after the first non-empty page
		pages       int
		waits       int
		pollErr     error
		polled      = make(chan struct{})
	)
	total.Store(-1)
	go func() { // the poller
		defer close(polled)
		cursor := ""
		for {
			page, next, err := s.Changes(ctx, cursor, pageSize)
			if err != nil {
				pollErr = err
				return
			}
			pages++
			stream, cursor = append(stream, page...), next
			if firstCursor == "" {
				firstCursor = next
			}
			if n := total.Load(); n >= 0 && int64(len(stream)) >= n {
				return
			}
			if len(page) > 0 {
				continue
			}
			// Wake at least every second to look at total again.
			waitCtx, cancelWait := context.WithTimeout(ctx, time.Second)
			err = s.Wait(waitCtx, cursor)
			cancelWait()
			waits++
			if err != nil && (!errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil) {
				pollErr = err
				return
			}
		}
	}()

	w := &world{msgs: map[string][]string{}}
	acks := make([][]ack, writers)
	misses := make([]int, writers)
	errs := make([]error, writers)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
			acks[i], misses[i], errs[i] = writeStorm(ctx, s, w, r, ops)
		})
	}
	wg.Wait()
	writeTime := time.Since(start)
	var feedRows int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM changes").Scan(&feedRows); err != nil {
		t.Fatal(err)
	}
	total.Store(feedRows)
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	<-polled
	drainTime := time.Since(start) - writeTime
	if pollErr != nil {
		t.Fatalf("poller: %v", pollErr)
	}

	// 1. The stream is exactly the feed table, in feed order, each row once.
	rows, err := pool.Query(ctx, `SELECT kind, chat_id::text, coalesce(message_id::text, ''), version
        FROM changes ORDER BY xid, seq`)
	if err != nil {
		t.Fatal(err)
	}
	var table []feedRow
	for rows.Next() {
		var r feedRow
		if err := rows.Scan(&r.kind, &r.chatID, &r.msgID, &r.version); err != nil {
			t.Fatal(err)
		}
		table = append(table, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	seen := map[int64]int{}
	for _, c := range stream {
		seen[c.Version]++
	}
	missing, dups := 0, 0
	for _, r := range table {
		if seen[r.version] == 0 {
			if missing < 5 {
				t.Errorf("the poller never saw %+v", r)
			}
			missing++
		}
	}
	for v, n := range seen {
		if n > 1 {
			if dups < 5 {
				t.Errorf("the poller saw version %d %d times", v, n)
			}
			dups++
		}
	}
	if missing > 0 || dups > 0 || len(stream) != len(table) {
		t.Fatalf("the poller read %d changes, the feed table holds %d: %d missing, %d duplicated",
			len(stream), len(table), missing, dups)
	}
	for i := range table {
		if rowOf(stream[i]) != table[i] {
			t.Fatalf("stream[%d] = %+v, feed table row %d = %+v: not in feed order", i, rowOf(stream[i]), i, table[i])
		}
	}

	// 2. Every acknowledged change is in the stream, as acknowledged.
	byVersion := map[int64]store.Change{}
	chatDeleted := map[string]int64{}
	for _, c := range stream {
		byVersion[c.Version] = c
		if c.Kind == store.KindChatDeleted {
			chatDeleted[c.ChatID] = c.Version
		}
	}
	totalAcks, totalMisses := 0, 0
	acked := map[int64]bool{}
	for i := range writers {
		totalMisses += misses[i]
		for _, a := range acks[i] {
			totalAcks++
			if a.kind == store.KindChatDeleted {
				if _, ok := chatDeleted[a.chatID]; !ok {
					t.Errorf("acknowledged chat.deleted of %s is not in the feed", a.chatID)
				}
				acked[chatDeleted[a.chatID]] = true
				continue
			}
			acked[a.version] = true
			c, ok := byVersion[a.version]
			got := ack{kind: c.Kind, chatID: c.ChatID, version: c.Version}
			if c.Message != nil {
				got.msgID, got.content = c.Message.ID, c.Message.Content
			}
			if !ok || got != a {
				t.Errorf("acknowledged %+v, the feed has %+v", a, got)
			}
		}
	}
	// The only unacknowledged changes are DeleteChat's message deletions,
	// before their chat's deletion.
	cascaded := 0
	for _, c := range stream {
		if acked[c.Version] {
			continue
		}
		if dv, ok := chatDeleted[c.ChatID]; c.Kind != store.KindMessageDeleted || !ok || c.Version >= dv {
			t.Errorf("unacknowledged change in the feed: %+v", c)
		}
		cascaded++
	}

	// 3. Per message and per chat: strictly increasing versions in stream
	// order, created first, nothing after deleted.
	type state struct {
		version int64 // of the message or chat itself
		last    int64 // of the chat's newest change, its messages' included
		deleted bool
		content string
	}
	msgs := map[string]*state{}
	chats := map[string]*state{}
	for i, c := range stream {
		ch := chats[c.ChatID]
		switch {
		case c.Kind == store.KindChatCreated:
			if ch != nil {
				t.Fatalf("stream[%d] %+v: chat created twice", i, c)
			}
			chats[c.ChatID] = &state{version: c.Version, last: c.Version}
			continue
		case ch == nil:
			t.Fatalf("stream[%d] %+v: change before its chat.created", i, c)
		case ch.deleted:
			t.Fatalf("stream[%d] %+v: change after chat.deleted", i, c)
		case c.Version <= ch.last:
			t.Fatalf("stream[%d] %+v: version not above the chat's previous %d", i, c, ch.last)
		}
		ch.last = c.Version
		if c.Kind == store.KindChatDeleted {
			ch.version, ch.deleted = c.Version, true
			continue
		}
		m := msgs[c.Message.ID]
		switch {
		case c.Kind == store.KindMessageCreated:
			if m != nil {
				t.Fatalf("stream[%d] %+v: message created twice", i, c)
			}
			msgs[c.Message.ID] = &state{version: c.Version, content: c.Message.Content}
			continue
		case m == nil:
			t.Fatalf("stream[%d] %+v: change before message.created", i, c)
		case m.deleted:
			t.Fatalf("stream[%d] %+v: change after message.deleted", i, c)
		case c.Version <= m.version:
			t.Fatalf("stream[%d] %+v: version not above the message's previous %d", i, c, m.version)
		}
		*m = state{version: c.Version, deleted: c.Kind == store.KindMessageDeleted, content: c.Message.Content}
	}

	// 4. Replaying the stream gives the store's state.
	for chatID, ch := range chats {
		got, err := s.Chat(ctx, chatID)
		if err != nil || got.Version != ch.version || got.IsDeleted != ch.deleted {
			t.Fatalf("chat %s = %+v, %v; the feed says version %d deleted %v", chatID, got, err, ch.version, ch.deleted)
		}
		list, err := s.Messages(ctx, chatID)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			want := msgs[m.ID]
			if want == nil || want.version != m.Version || want.deleted != m.IsDeleted || want.content != m.Content {
				t.Fatalf("message %+v; the feed says %+v", m, want)
			}
		}
	}

	// 5. Pruning all of it (in batches) expires the poller's first cursor
	// and leaves an empty feed.
	pruner := store.New(pool, store.Options{Retention: time.Microsecond})
	defer pruner.Close()
	pruneStart := time.Now()
	if n, err := pruner.Prune(ctx); err != nil || n != int64(len(table)) {
		t.Fatalf("Prune of the whole feed = %d, %v; want %d", n, err, len(table))
	}
	pruneTime := time.Since(pruneStart)
	if _, _, err := s.Changes(ctx, firstCursor, pageSize); !errors.Is(err, store.ErrCursorExpired) {
		t.Errorf("Changes with the first cursor after pruning everything: %v, want ErrCursorExpired", err)
	}
	if page, next, err := s.Changes(ctx, "", pageSize); err != nil || len(page) != 0 || next != "" {
		t.Errorf("Changes from the beginning after pruning everything = %d changes, %q, %v", len(page), next, err)
	}

	t.Logf("%d writers × %d ops in %v (%.0f ops/s): %d acknowledged, %d missed (target deleted first), "+
		"%d cascaded deletes; feed %d changes, %d chats, %d messages",
		writers, ops, writeTime.Round(time.Millisecond), float64(writers*ops)/writeTime.Seconds(),
		totalAcks, totalMisses, cascaded, len(table), len(chats), len(msgs))
	t.Logf("poller: %d pages of ≤%d, %d waits, drained %v after the last write; pruned all in %v",
		pages, pageSize, waits, drainTime.Round(time.Millisecond), pruneTime.Round(time.Millisecond))
}
