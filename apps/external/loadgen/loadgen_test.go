package loadgen_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
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
		t.Fatalf("attempted %d, acked %d, failed %d, 404 %d; %d records in the log",
			st.Attempted, st.Acked, st.Failed, st.NotFound, len(records))
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

	// Every acknowledged write must show up in the feed, once. Other test
	// packages may hold the cluster-wide transaction horizon for a moment,
	// so read the feed until all of them have arrived (or a minute passed).
	type key struct {
		kind string
		id   string
	}
	want := map[key]int64{} // version, 0 where the response carried none
	for _, r := range records {
		id := r.ChatID
		if r.MessageID != "" && r.Op != loadgen.OpChatCreated {
			id = r.MessageID
		}
		k := key{string(r.Op), id}
		if r.Op == loadgen.OpMessageUpdated {
			k.id += "@" + strconv.FormatInt(r.Version, 10) // a message may be edited many times
		}
		if _, dup := want[k]; dup {
			t.Errorf("write %+v recorded twice", r)
		}
		want[k] = r.Version
	}
	missing := func(feed []store.Change) []key {
		got := map[key]int64{}
		for _, c := range feed {
			k := key{string(c.Kind), c.ChatID}
			if c.Message != nil {
				k.id = c.Message.ID
			}
			if c.Kind == store.KindMessageUpdated {
				k.id += "@" + strconv.FormatInt(c.Version, 10)
			}
			got[k] = c.Version
		}
		var out []key
		for k, v := range want {
			gv, ok := got[k]
			// Deletes answer 204 without a version; the rest must match.
			if !ok || v != 0 && gv != v {
				out = append(out, k)
			}
		}
		return out
	}
	var feed []store.Change
	cursor := ""
	for deadline := time.Now().Add(time.Minute); ; {
		page, next := readPage(t, srv.URL, cursor)
		feed, cursor = append(feed, page...), next
		if len(page) > 0 {
			continue
		}
		left := missing(feed)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged writes never reached the feed, e.g. %v", len(left), left[0])
		}
	}
}

// readPage reads one feed page after cursor, long-polling up to 2s.
func readPage(t *testing.T, base, cursor string) ([]store.Change, string) {
	t.Helper()
	resp, err := http.Get(base + "/api/changes?limit=1000&wait=2s&cursor=" + cursor)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Changes []store.Change `json:"changes"`
		Cursor  string         `json:"cursor"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	return page.Changes, page.Cursor
}
