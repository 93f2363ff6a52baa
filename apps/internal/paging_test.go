package main

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
	"github.com/chatpoc/chat-poc/internal/chatdb/chatdbtest"
)

// restPage is GET /api/chats/:id/messages's answer.
type restPage struct {
	Messages []change.Message `json:"messages"`
	Deleted  bool             `json:"deleted"`
	HasMore  bool             `json:"hasMore"`
	Before   string           `json:"before"`
}

// restAll reads chat chatID through GET /api/chats/:id/messages, limit
// messages a page, from the newest page back to the first; it returns the
// messages in display order.
func (e *appEnv) restAll(chatID string, limit int) ([]change.Message, error) {
	var all []change.Message
	before := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			return nil, fmt.Errorf("more than 1,000 pages")
		}
		var p restPage
		path := fmt.Sprintf("/api/chats/%s/messages?limit=%d&before=%s", chatID, limit, url.QueryEscape(before))
		if code := e.get(path, &p); code != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %d", path, code)
		}
		if len(p.Messages) > limit {
			return nil, fmt.Errorf("a page of %d messages, limit %d", len(p.Messages), limit)
		}
		all = append(slices.Clone(p.Messages), all...)
		if !p.HasMore {
			return all, nil
		}
		if p.Before == before {
			return nil, fmt.Errorf("page %d: the cursor did not move", pages+1)
		}
		before = p.Before
	}
}

func idVersions(msgs []change.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprintf("%s@%d", m.ID, m.Version)
	}
	return out
}

// TestPagesCoverTheChatUnderConcurrentWrites stores 1,000 messages of a chat
// (pairs sharing a creation time) and gives the app's cache, through Kafka,
// messages only it has (placed among the stored ones) and newer versions of
// stored ones. Then: REST pages put together are the chat (newest version
// of each message, display order); a sub's load is the newest page and says
// older ones exist; and a client that pages back with "more" to the first
// message while new messages and edits are written meanwhile gets every
// message exactly once in its pages (or, when an update overtook its page,
// by that update), pages in order, and ends with the final version of
// every message.
func TestPagesCoverTheChatUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	const pageSize = 50
	e := newAppEnv(t, func(c *Config) { c.PageSize = pageSize; c.WSRequestRate = 0 })
	e.waitConsuming()
	chat := e.prefix + "-c"
	want := map[string]change.Message{}
	for _, m := range e.insertMessages(chat, 1000) {
		want[m.ID] = m
	}
	var produced []change.Message
	for _, i := range []int{0, 1, 49, 50, 51, 500, 899, 900, 949, 950, 998, 999} {
		id := fmt.Sprintf("%s-m%d", chat, i)
		produced = append(produced,
			msg(chat, id+"x", int64(i/2), int64(5000+i), "cached only"), // right after message i
			msg(chat, id, int64(i/2), int64(6000+i), "edited"))
	}
	// Before every other message; produced last, on the chat's partition:
	// once it is cached, the others are.
	produced = append(produced, msg(chat, chat+"-probe", -1000, 7000, "probe"))
	e.produceMessages(produced...)
	for _, m := range produced {
		want[m.ID] = m
	}
	ordered := slices.SortedFunc(func(yield func(change.Message) bool) {
		for _, m := range want {
			if !yield(m) {
				return
			}
		}
	}, chatdb.Compare)
	waitFor(t, "REST pages to be the chat", func() error {
		got, err := e.restAll(chat, 7)
		if err != nil {
			return err
		}
		if !slices.Equal(idVersions(got), idVersions(ordered)) {
			return fmt.Errorf("REST pages put together: %d messages, want %d", len(got), len(ordered))
		}
		return nil
	})
	for _, q := range []string{"?before=nonsense", "?limit=0", "?limit=1001"} {
		if code := e.get("/api/chats/"+chat+"/messages"+q, nil); code != http.StatusBadRequest {
			t.Errorf("GET …/messages%s: %d, want 400", q, code)
		}
	}

	a := e.dial()
	a.send(`{"type":"sub","id":"` + chat + `"}`)
	load := a.nextOf(chat)
	if newest := idVersions(ordered[len(ordered)-pageSize:]); load.Type != "load" || !load.HasMore || load.Before == "" ||
		!slices.Equal(idVersions(load.Messages), newest) {
		t.Fatalf("load: %s hasMore %v before %q\n %v;\nwant the newest %d, hasMore and a cursor:\n %v",
			load.Type, load.HasMore, load.Before, idVersions(load.Messages), pageSize, newest)
	}
	for _, tt := range []struct{ frame, code string }{
		{`{"type":"more","chatId":"` + e.prefix + `-other","before":"` + load.Before + `"}`, "notSubscribed"},
		{`{"type":"more","chatId":"` + chat + `","before":"nonsense"}`, "badRequest"},
		{`{"type":"more","chatId":"` + chat + `"}`, "badRequest"},
	} {
		a.send(tt.frame)
		if f := a.next(); f.Type != "error" || f.Code != tt.code || f.Request != "more" {
			t.Errorf("%s: %+v; want an error frame with code %s", tt.frame, f, tt.code)
		}
	}

	// Concurrent writes: new messages and edits of old ones, while b pages.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	final := maps.Clone(want)
	var writes []change.Message
	r := rand.New(rand.NewPCG(1, 2))
	for j := range 200 {
		if j%2 == 0 {
			writes = append(writes, msg(chat, fmt.Sprintf("%s-n%d", chat, j), 10_000+int64(j), 10_000+int64(j), "new"))
		} else {
			old := ordered[r.IntN(len(ordered))]
			writes = append(writes, msg(chat, old.ID, old.CreatedAt.Sub(chatdbtest.T0).Milliseconds(), 10_000+int64(j), "edited again"))
		}
		final[writes[j].ID] = writes[j]
	}
	b := e.dial()
	written := make(chan error, 1)
	go func() {
		written <- stacktest.Produce(e.producer, chatdbtest.Records(nil, e.cfg.MessageTopic, e.cfg.ChatTopic, writes, nil), 1, 5*time.Millisecond)
	}()
	b.send(`{"type":"sub","id":"` + chat + `"}`)
	inPages := map[string]int{}
	seen := map[string]int64{} // the newest version b was sent of each message
	var prevOldest *change.Message
	paged, pages := false, 0
	for !paged || !reached(seen, final) {
		f, err := b.read(ctx)
		if err != nil {
			t.Fatalf("after %d pages: %v; %d of %d messages at their final version", pages, err, count(seen, final), len(final))
		}
		for _, m := range f.Messages {
			seen[m.ID] = max(seen[m.ID], m.Version)
		}
		switch f.Type {
		case "load", "page":
			pages++
			for _, m := range f.Messages {
				inPages[m.ID]++
			}
			if n := len(f.Messages); n > 0 {
				if prevOldest != nil && chatdb.Compare(f.Messages[n-1], *prevOldest) >= 0 {
					t.Fatalf("page %d ends at %s, not before the previous page's oldest %s", pages, f.Messages[n-1].ID, prevOldest.ID)
				}
				prevOldest = &f.Messages[0]
			}
			if f.HasMore {
				b.send(`{"type":"more","chatId":"` + chat + `","before":"` + f.Before + `"}`)
			} else {
				paged = true
			}
		case "error":
			t.Fatalf("error frame %+v", f)
		}
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	for id, n := range inPages {
		if n > 1 {
			t.Errorf("message %s in %d pages", id, n)
		}
	}
	for id := range want {
		if _, ok := seen[id]; !ok {
			t.Errorf("message %s was in no page and no update (a gap)", id)
		}
	}
	t.Logf("%d pages, %d messages in them, %d messages in all", pages, len(inPages), len(final))
}

// reached reports whether seen has every message of final at its version.
func reached(seen map[string]int64, final map[string]change.Message) bool {
	return count(seen, final) == len(final)
}

func count(seen map[string]int64, final map[string]change.Message) int {
	n := 0
	for id, m := range final {
		if seen[id] >= m.Version {
			n++
		}
	}
	return n
}
