package chatdb_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// TestMessagesPage pages through a chat whose messages share creation times
// (ordered by ID in byte order: "A1" < "a-1" < "a.1" < "a1" < "a_1") and
// checks that the pages, newest first, put together are the chat in display
// order with no gap and no duplicate; and the empty, deleted and unknown
// cases.
func TestMessagesPage(t *testing.T) {
	t.Parallel()
	db, _ := newDB(t)
	ctx := t.Context()
	var all []change.Message
	for i := range 40 {
		for _, id := range []string{"a_1", "a1", "a.1", "a-1", "A1"} {
			all = append(all, msg(fmt.Sprintf("%s-%02d", id, i), "c", int64(i/3), int64(len(all)+1), id, i%7 == 0))
		}
	}
	apply(t, db, chatdb.Batch{
		Chats:    []change.Chat{chatNew("c", 1), chatNew("gone", 2), chatDelete("gone", 3), chatNew("empty", 4)},
		Messages: append(slices.Clone(all), msg("g1", "gone", 1, 1, "g", false), msg("o1", "orphan", 1, 1, "o", false)),
	})
	slices.SortFunc(all, chatdb.Compare)

	for _, limit := range []int{1, 7, 200, 201} {
		var got []change.Message
		var before chatdb.Cursor
		for pages := 0; ; pages++ {
			if pages > len(all)+1 {
				t.Fatalf("limit %d: more pages than messages", limit)
			}
			page, deleted, err := db.MessagesPage(ctx, "c", before, limit)
			if err != nil || deleted {
				t.Fatalf("limit %d: MessagesPage(c, %+v) = %v, %v", limit, before, deleted, err)
			}
			if len(page) > limit {
				t.Fatalf("limit %d: a page of %d", limit, len(page))
			}
			if len(page) == 0 {
				break
			}
			got = append(slices.Clone(page), got...)
			before = chatdb.CursorOf(page[0])
		}
		if !slices.Equal(got, all) {
			t.Errorf("limit %d: the pages put together differ from the chat:\n got %v\nwant %v", limit, ids(got), ids(all))
		}
	}

	tests := []struct {
		chat        string
		want        []change.Message
		wantDeleted bool
	}{
		{"gone", []change.Message{msg("g1", "gone", 1, 1, "g", true)}, true},
		{"empty", []change.Message{}, false},
		{"orphan", []change.Message{msg("o1", "orphan", 1, 1, "o", false)}, false},
	}
	for _, tt := range tests {
		got, deleted, err := db.MessagesPage(ctx, tt.chat, chatdb.Cursor{}, 10)
		if err != nil || deleted != tt.wantDeleted || !slices.Equal(got, tt.want) {
			t.Errorf("MessagesPage(%s) = %+v, %v, %v; want %+v, %v", tt.chat, got, deleted, err, tt.want, tt.wantDeleted)
		}
	}
	// A chat known by its messages only, before its first: an empty page.
	if got, _, err := db.MessagesPage(ctx, "orphan", chatdb.CursorOf(msg("o1", "orphan", 1, 1, "", false)), 10); err != nil || len(got) != 0 {
		t.Errorf("MessagesPage(orphan, before its message) = %v, %v; want an empty page", got, err)
	}
	if got, _, err := db.MessagesPage(ctx, "unknown", chatdb.Cursor{}, 10); !errors.Is(err, chatdb.ErrNotFound) {
		t.Errorf("MessagesPage(unknown) = %v, %v; want ErrNotFound", got, err)
	}
}

func ids(msgs []change.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// TestMessagesPageReadsOnlyItsPage checks the plan of a page deep in a
// chat of 20,000 messages: one backward range read of the
// messages_chat_page index that stops after the page's rows, no sort — the
// chat is never read whole, so a big chat opens as fast as a small one.
func TestMessagesPageReadsOnlyItsPage(t *testing.T) {
	t.Parallel()
	_, pool := newDB(t)
	ctx := t.Context()
	const n, limit = 20_000, 50
	if _, err := pool.Exec(ctx, `
INSERT INTO messages (id, chat_id, content, created_at, updated_at, is_deleted, version)
SELECT 'm' || i, 'big', 'x', $1::timestamptz + i * interval '1 ms', $1, false, i FROM generate_series(1, $2) AS i`,
		t0, n); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE messages`); err != nil {
		t.Fatal(err)
	}
	for _, before := range []chatdb.Cursor{{}, chatdb.CursorOf(msg("m10000", "big", 10000, 1, "", false))} {
		at := pgtype.Timestamptz{Time: before.CreatedAt, Valid: true}
		if before.IsZero() {
			at.InfinityModifier = pgtype.Infinity
		}
		var plan []struct{ Plan planNode }
		var raw []byte
		if err := pool.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON)"+chatdb.PageSQL, "big", at, before.ID, limit).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &plan); err != nil {
			t.Fatal(err)
		}
		var scans []planNode
		plan[0].Plan.walk(func(p planNode) {
			if p.Relation == "messages" || strings.Contains(p.Type, "Sort") {
				scans = append(scans, p)
			}
		})
		for _, s := range scans {
			if read := s.Rows + s.Removed; strings.Contains(s.Type, "Sort") || read > limit {
				t.Errorf("before %+v: %s on %s via %q read %v rows; want scans of at most %d rows and no sort\n%s",
					before, s.Type, s.Relation, s.Index, read, limit, raw)
			}
		}
		if len(scans) == 0 {
			t.Errorf("no scan of messages in the plan:\n%s", raw)
		}
	}
}

// planNode is a node of EXPLAIN's JSON plan.
type planNode struct {
	Type     string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Index    string     `json:"Index Name"`
	Rows     float64    `json:"Actual Rows"`
	Removed  float64    `json:"Rows Removed by Filter"`
	Plans    []planNode `json:"Plans"`
}

func (p planNode) walk(f func(planNode)) {
	f(p)
	for _, c := range p.Plans {
		c.walk(f)
	}
}
