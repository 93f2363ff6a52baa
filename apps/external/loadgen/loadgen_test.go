package loadgen_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/api"
	"github.com/chatpoc/chat-poc/apps/external/externaltest"
	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/apps/external/store"
)

// TestLogMatchesTheFeed runs a short storm with bursts and throttling and
// checks that every acknowledged write in the log is a change in the
// service's feed with the same version, and that nothing was recorded twice.
func TestLogMatchesTheFeed(t *testing.T) {
	srv := externaltest.NewServer(t, api.Config{Faults: api.Faults{ThrottleRate: 0.05}})
	path := filepath.Join(t.TempDir(), "load.jsonl")
	rec, err := loadgen.CreateFileRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := loadgen.Run(context.Background(), loadgen.Config{
		BaseURL: srv.URL, Rate: 200, MaxOps: 400, Duration: time.Minute, Chats: 5,
		BurstEvery: 300 * time.Millisecond, BurstSize: 20, Seed: 7,
	}, rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	records, err := loadgen.ReadLog(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Attempted != 400 || int64(len(records)) != st.Acked || st.Acked+st.Failed+st.NotFound != st.Attempted {
		t.Fatalf("stats %+v with %d records", st, len(records))
	}
	if st.Throttled == 0 {
		t.Errorf("no 429 seen with a 5%% throttle rate over 400 writes")
	}
	seen := map[loadgen.Op]int{}
	for _, r := range records {
		seen[r.Op]++
	}
	for _, op := range []loadgen.Op{loadgen.OpChatCreated, loadgen.OpMessageCreated, loadgen.OpMessageUpdated, loadgen.OpMessageDeleted} {
		if seen[op] == 0 {
			t.Errorf("the mix made no %s in 400 writes: %v", op, seen)
		}
	}

	feed := readFeed(t, srv.URL)
	type key struct {
		kind    string
		id      string
		version int64
	}
	inFeed := map[key]bool{}
	for _, c := range feed {
		id := c.ChatID
		if c.Message != nil {
			id = c.Message.ID
		}
		inFeed[key{string(c.Kind), id, c.Version}] = true
	}
	dups := map[key]bool{}
	for _, r := range records {
		if r.Op == loadgen.OpChatDeleted {
			continue // the 204 of a delete carries no version to compare
		}
		id := r.ChatID
		if r.MessageID != "" && r.Op != loadgen.OpChatCreated {
			id = r.MessageID
		}
		k := key{string(r.Op), id, r.Version}
		if r.Op == loadgen.OpMessageDeleted {
			k.version = 0 // likewise
			found := false
			for fk := range inFeed {
				if fk.kind == k.kind && fk.id == id {
					found = true
				}
			}
			if !found {
				t.Errorf("acknowledged %s of %s is not in the feed", r.Op, id)
			}
			continue
		}
		if !inFeed[k] {
			t.Errorf("acknowledged write %+v is not in the feed", r)
		}
		if dups[k] {
			t.Errorf("write %+v recorded twice", r)
		}
		dups[k] = true
	}
}

func readFeed(t *testing.T, base string) []store.Change {
	t.Helper()
	var all []store.Change
	cursor := ""
	for {
		resp, err := http.Get(base + "/api/changes?limit=1000&cursor=" + cursor)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Changes []store.Change `json:"changes"`
			Cursor  string         `json:"cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Changes) == 0 {
			return all
		}
		all = append(all, page.Changes...)
		cursor = page.Cursor
	}
}
