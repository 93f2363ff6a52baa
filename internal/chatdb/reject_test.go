package chatdb_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/chatdb"
)

// refuse adds check constraints to the test's database that Postgres
// enforces and CheckMessage does not know: a message whose content is
// "poison" and a chat whose ID ends in "-poison" are refused, as a record
// breaking a real constraint (or a limit) would be.
func refuse(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for _, stmt := range []string{
		`ALTER TABLE messages ADD CONSTRAINT test_no_poison CHECK (content <> 'poison')`,
		`ALTER TABLE chats ADD CONSTRAINT test_no_poison CHECK (id NOT LIKE '%-poison')`,
	} {
		if _, err := pool.Exec(t.Context(), stmt); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRejectionsFindTheRecordsPostgresRefuses puts records that break a
// constraint among good ones: Apply refuses the batch with ErrRejected and
// writes nothing; Rejections names exactly the bad records, writes nothing,
// and the batch without them applies.
func TestRejectionsFindTheRecordsPostgresRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		badMsgs   []int // indexes of poison messages among 40
		badChats  []int // indexes of poison chats among 3
		wantFound int
	}{
		{name: "none", wantFound: 0},
		{name: "one message", badMsgs: []int{17}, wantFound: 1},
		{name: "first and last", badMsgs: []int{0, 39}, wantFound: 2},
		{name: "a chat and messages", badMsgs: []int{5, 6, 30}, badChats: []int{1}, wantFound: 4},
		{name: "every message", badMsgs: seq(40), wantFound: 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, pool := newDB(t)
			refuse(t, pool)
			prefix := strings.ReplaceAll(t.Name(), "/", "-")
			var b chatdb.Batch
			for i := range 3 {
				id := fmt.Sprintf("%s-c%d", prefix, i)
				if slices.Contains(tc.badChats, i) {
					id += "-poison"
				}
				b.Chats = append(b.Chats, chatNew(id, 1))
			}
			for i := range 40 {
				content := fmt.Sprintf("m%d", i)
				if slices.Contains(tc.badMsgs, i) {
					content = "poison"
				}
				b.Messages = append(b.Messages, msg(fmt.Sprintf("%s-m%d", prefix, i), b.Chats[i%3].ID, int64(i), 1, content, false))
			}
			b.Offsets = []chatdb.Advance{first("chat-messages", 0, 43)}

			found, err := db.Rejections(t.Context(), b)
			if err != nil {
				t.Fatal(err)
			}
			var gotMsgs, gotChats []int
			for _, r := range found {
				if !errors.Is(r.Err, chatdb.ErrRejected) || !strings.Contains(r.Err.Error(), "test_no_poison") {
					t.Errorf("rejection %+v: the reason should wrap ErrRejected and name the constraint", r)
				}
				if r.Kind == change.KindChat {
					gotChats = append(gotChats, r.Index)
				} else {
					gotMsgs = append(gotMsgs, r.Index)
				}
			}
			slices.Sort(gotMsgs)
			if len(found) != tc.wantFound || !slices.Equal(gotMsgs, tc.badMsgs) || !slices.Equal(gotChats, tc.badChats) {
				t.Errorf("rejected messages %v and chats %v, want %v and %v", gotMsgs, gotChats, tc.badMsgs, tc.badChats)
			}
			if rows := dump(t, pool); len(rows) != 0 {
				t.Fatalf("Rejections wrote %d rows, want none: %v", len(rows), rows[:1])
			}
			_, err = db.Apply(t.Context(), group, b)
			if want := tc.wantFound > 0; errors.Is(err, chatdb.ErrRejected) != want {
				t.Fatalf("Apply: %v; want ErrRejected: %v", err, want)
			}
			if tc.wantFound == 0 {
				return
			}
			if rows := dump(t, pool); len(rows) != 0 {
				t.Fatalf("a refused Apply wrote %d rows, want none", len(rows))
			}

			good := chatdb.Batch{Offsets: b.Offsets}
			for i, m := range b.Messages {
				if !slices.Contains(tc.badMsgs, i) {
					good.Messages = append(good.Messages, m)
				}
			}
			for i, c := range b.Chats {
				if !slices.Contains(tc.badChats, i) {
					good.Chats = append(good.Chats, c)
				}
			}
			a := apply(t, db, good)
			if a.MessagesWritten != len(good.Messages) || a.ChatsWritten != len(good.Chats) {
				t.Errorf("the batch without the refused records: %+v, want %d messages and %d chats written",
					a, len(good.Messages), len(good.Chats))
			}
		})
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
