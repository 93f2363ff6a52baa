package converge_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/internal/change"
	"github.com/chatpoc/chat-poc/internal/converge"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// ack is the acknowledgement time of the log's record n (from 1).
func ack(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

// Delays of the fixture: every row is written dbDelay after its final
// acknowledged change, every frame received streamDelay after its change.
const (
	dbDelay     = 5 * time.Millisecond
	streamDelay = 10 * time.Millisecond
)

// fixture is a run in which everything converged: external's history (the
// log), the database that holds its final state, and a client's stream that
// showed chat c1 live and saw c2 come and go.
//
// External: c1 created (v1); m1 posted (v2) and m2 posted (v3) in c1; m1
// edited (v4); m2 deleted (v5, answered without a version); c2 created (v6);
// m3 posted in c2 (v7); c2 deleted (m3 deleted with it at v9, c2 at v10).
type fixture struct {
	log     []loadgen.Record
	db      converge.DBState
	streams []converge.Stream
}

func newFixture() fixture {
	rec := func(n int, op loadgen.Op, chat, msg, content string, v int64) loadgen.Record {
		return loadgen.Record{Op: op, ChatID: chat, MessageID: msg, Content: content, Version: v,
			SentAt: ack(n).Add(-time.Millisecond), AckedAt: ack(n)}
	}
	msg := func(id, chat string, created int, content string, v int64, deleted bool) change.Message {
		return change.Message{ID: id, ChatID: chat, Content: content, CreatedAt: ack(created), UpdatedAt: ack(created),
			IsDeleted: deleted, Version: v}
	}
	m1v2, m1v4 := msg("m1", "c1", 2, "hello", 2, false), msg("m1", "c1", 2, "hello, edited", 4, false)
	m2v3, m2v5 := msg("m2", "c1", 3, "doomed", 3, false), msg("m2", "c1", 3, "doomed", 5, true)
	m3v9 := msg("m3", "c2", 7, "in c2", 9, true)
	at := func(n int) time.Time { return ack(n).Add(streamDelay) }
	return fixture{
		log: []loadgen.Record{
			rec(1, loadgen.OpChatCreated, "c1", "", "", 1),
			rec(2, loadgen.OpMessageCreated, "c1", "m1", "hello", 2),
			rec(3, loadgen.OpMessageCreated, "c1", "m2", "doomed", 3),
			rec(4, loadgen.OpMessageUpdated, "c1", "m1", "hello, edited", 4),
			rec(5, loadgen.OpMessageDeleted, "c1", "m2", "", 0),
			rec(6, loadgen.OpChatCreated, "c2", "", "", 6),
			rec(7, loadgen.OpMessageCreated, "c2", "m3", "in c2", 7),
			rec(8, loadgen.OpChatDeleted, "c2", "", "", 0),
		},
		db: converge.DBState{
			Chats: []converge.ChatRow{
				{ID: "c1", Version: 1, ReplicatedAt: ack(1).Add(dbDelay)},
				{ID: "c2", IsDeleted: true, Version: 10, ReplicatedAt: ack(8).Add(dbDelay)},
			},
			Messages: []converge.MessageRow{
				{Message: m1v4, ReplicatedAt: ack(4).Add(dbDelay)},
				{Message: m2v5, ReplicatedAt: ack(5).Add(dbDelay)},
				{Message: m3v9, ReplicatedAt: ack(8).Add(dbDelay)},
			},
		},
		streams: []converge.Stream{{Name: "tab", Frames: []converge.Received{
			{At: at(1), Conn: 1, Frame: converge.Frame{Type: converge.FrameNewChat, ChatID: "c1"}},
			{At: at(1).Add(time.Millisecond), Conn: 1, Frame: converge.Frame{Type: converge.FrameLoad, ChatID: "c1", Messages: []change.Message{}}},
			{At: at(2), Conn: 1, Frame: update(m1v2)},
			{At: at(3), Conn: 1, Frame: update(m2v3)},
			{At: at(4), Conn: 1, Frame: update(m1v4)},
			{At: at(5), Conn: 1, Frame: update(m2v5)},
			{At: at(6), Conn: 1, Frame: converge.Frame{Type: converge.FrameNewChat, ChatID: "c2"}},
			{At: at(8), Conn: 1, Frame: converge.Frame{Type: converge.FrameDelete, ChatID: "c2"}},
		}}},
	}
}

func update(m change.Message) converge.Frame {
	return converge.Frame{Type: converge.FrameUpdate, ChatID: m.ChatID, Messages: []change.Message{m}}
}

func load(chat string, ms ...change.Message) converge.Frame {
	return converge.Frame{Type: converge.FrameLoad, ChatID: chat, Messages: ms}
}

// message returns the fixture's row of message id.
func (f *fixture) message(id string) *converge.MessageRow {
	for i := range f.db.Messages {
		if f.db.Messages[i].ID == id {
			return &f.db.Messages[i]
		}
	}
	panic("no message " + id)
}

func (f *fixture) chat(id string) *converge.ChatRow {
	for i := range f.db.Chats {
		if f.db.Chats[i].ID == id {
			return &f.db.Chats[i]
		}
	}
	panic("no chat " + id)
}

// receive appends a frame to the fixture's stream, 1 ms after its last.
func (f *fixture) receive(conn int, fr converge.Frame) {
	s := &f.streams[0]
	s.Frames = append(s.Frames, converge.Received{At: s.Frames[len(s.Frames)-1].At.Add(time.Millisecond), Conn: conn, Frame: fr})
}

// drop removes from the fixture's stream the frame of type typ that carries
// version v of message id.
func (f *fixture) drop(typ, id string, v int64) {
	s := &f.streams[0]
	i := slices.IndexFunc(s.Frames, func(r converge.Received) bool {
		return r.Frame.Type == typ && len(r.Frame.Messages) == 1 && r.Frame.Messages[0].ID == id && r.Frame.Messages[0].Version == v
	})
	if i < 0 {
		panic(fmt.Sprintf("no %s frame of %s v%d", typ, id, v))
	}
	s.Frames = slices.Delete(s.Frames, i, i+1)
}

// want is what a case expects of the report: the IDs of each kind of
// finding, sorted.
type want struct {
	lost, stale, duplicates, regressions, streamDuplicates, ahead, lostInStream []string
	unlogged                                                                    int
}

func ids(fs []converge.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.ID)
	}
	slices.Sort(out)
	return out
}

// TestCompare seeds each kind of divergence into a converged run and checks
// that Compare reports it, and only it.
func TestCompare(t *testing.T) {
	t.Parallel()
	m1 := func(v int64, content string) change.Message {
		return change.Message{ID: "m1", ChatID: "c1", Content: content, CreatedAt: ack(2), UpdatedAt: ack(2), Version: v}
	}
	tests := []struct {
		name   string
		mutate func(f *fixture)
		want   want
	}{
		{"clean run", func(*fixture) {}, want{}},
		{"acknowledgements out of version order", func(f *fixture) {
			f.log[1], f.log[3] = f.log[3], f.log[1] // m1's edit (v4) acknowledged before its creation (v2)
		}, want{}},

		// Lost: no row at all.
		{"message row missing", func(f *fixture) { f.db.Messages = slices.Delete(f.db.Messages, 0, 1) }, want{lost: []string{"m1"}}},
		{"deleted message's row missing", func(f *fixture) { f.db.Messages = slices.Delete(f.db.Messages, 1, 2) }, want{lost: []string{"m2"}}},
		{"chat row missing", func(f *fixture) { f.db.Chats = slices.Delete(f.db.Chats, 0, 1) }, want{lost: []string{"c1"}}},

		// Stale: a row that is not the final state.
		{"edit not applied", func(f *fixture) { f.message("m1").Message = m1(2, "hello") }, want{stale: []string{"m1"}}},
		{"other content at the final version", func(f *fixture) { f.message("m1").Content = "hullo, edited" }, want{stale: []string{"m1"}}},
		{"deleted message visible", func(f *fixture) { f.message("m2").IsDeleted = false }, want{stale: []string{"m2"}}},
		{"deleted at an older version than acknowledged", func(f *fixture) {
			f.message("m2").Version = 2
		}, want{stale: []string{"m2"}}},
		{"message of a deleted chat visible", func(f *fixture) { f.message("m3").IsDeleted = false }, want{stale: []string{"m3"}}},
		{"deleted chat visible", func(f *fixture) { f.chat("c2").IsDeleted = false }, want{stale: []string{"c2"}}},
		{"live message deleted at its version", func(f *fixture) { f.message("m1").IsDeleted = true }, want{stale: []string{"m1"}}},
		{"message in another chat", func(f *fixture) { f.message("m1").ChatID = "c2" }, want{stale: []string{"m1"}}},
		{"chat at an older version", func(f *fixture) { f.chat("c1").Version = 0 }, want{stale: []string{"c1"}}},

		// Duplicates in the database.
		{"two rows of one message", func(f *fixture) {
			f.db.Messages = append(f.db.Messages, *f.message("m1"))
		}, want{duplicates: []string{"m1"}}},
		{"one message under two IDs", func(f *fixture) {
			dup := *f.message("m1")
			dup.ID = "m1-again"
			f.db.Messages = append(f.db.Messages, dup)
		}, want{duplicates: []string{"m1", "m1-again"}, unlogged: 1}},
		{"two rows of one chat", func(f *fixture) { f.db.Chats = append(f.db.Chats, *f.chat("c1")) }, want{duplicates: []string{"c1"}}},

		// Ahead of the log: not failures.
		{"edit whose acknowledgement was lost", func(f *fixture) { f.message("m1").Message = m1(11, "unacknowledged") }, want{ahead: []string{"m1"}}},
		{"chat delete whose acknowledgement was lost", func(f *fixture) {
			f.log = f.log[:len(f.log)-1] // c2's delete was not acknowledged
			f.message("m3").Version = 7  // the writer deleted m3 with its chat before m3's own delete arrived
			f.streams[0].Frames = f.streams[0].Frames[:7]
		}, want{ahead: []string{"c2", "m3"}}},
		{"row the log does not name", func(f *fixture) {
			f.db.Messages = append(f.db.Messages, converge.MessageRow{Message: change.Message{
				ID: "m4", ChatID: "c1", Content: "posted, never acknowledged", CreatedAt: ack(9), UpdatedAt: ack(9), Version: 11}})
		}, want{unlogged: 1}},

		// Streams.
		{"older version after a newer one", func(f *fixture) { f.receive(1, update(m1(2, "hello"))) }, want{regressions: []string{"m1"}}},
		{"older version in a load after a reconnect", func(f *fixture) { f.receive(2, load("c1", m1(2, "hello"))) }, want{regressions: []string{"m1"}}},
		{"chat created again after its delete", func(f *fixture) {
			f.receive(1, converge.Frame{Type: converge.FrameNewChat, ChatID: "c2"})
		}, want{regressions: []string{"c2"}}},
		{"update pushed twice", func(f *fixture) { f.receive(1, update(m1(4, "hello, edited"))) }, want{streamDuplicates: []string{"m1"}}},
		{"newChat pushed twice", func(f *fixture) {
			f.receive(1, converge.Frame{Type: converge.FrameNewChat, ChatID: "c1"})
		}, want{streamDuplicates: []string{"c1"}}},
		{"chat delete pushed twice", func(f *fixture) {
			f.receive(1, converge.Frame{Type: converge.FrameDelete, ChatID: "c2"})
		}, want{streamDuplicates: []string{"c2"}}},
		{"update repeated on a new connection", func(f *fixture) { f.receive(2, update(m1(4, "hello, edited"))) }, want{}},
		{"update at the version a load carried", func(f *fixture) {
			f.receive(1, load("c1", m1(12, "newer")))
			f.receive(1, update(m1(12, "newer")))
			f.message("m1").Message = m1(12, "newer")
		}, want{ahead: []string{"m1"}}},

		// Completeness: every stream carries the final state it owes.
		{"edit never pushed", func(f *fixture) { f.drop(converge.FrameUpdate, "m1", 4) }, want{lostInStream: []string{"m1"}}},
		{"message delete never pushed", func(f *fixture) { f.drop(converge.FrameUpdate, "m2", 5) }, want{lostInStream: []string{"m2"}}},
		{"creation never pushed, the edit was", func(f *fixture) { f.drop(converge.FrameUpdate, "m1", 2) }, want{}},
		{"edit missed, carried by the load after a reconnect", func(f *fixture) {
			f.drop(converge.FrameUpdate, "m1", 4)
			f.receive(2, load("c1", m1(4, "hello, edited"), f.message("m2").Message))
		}, want{}},
		{"edit missed, carried by an older page after a reconnect", func(f *fixture) {
			f.drop(converge.FrameUpdate, "m1", 4)
			f.receive(2, load("c1", f.message("m2").Message))
			f.receive(2, converge.Frame{Type: converge.FramePage, ChatID: "c1", Messages: []change.Message{m1(4, "hello, edited")}})
		}, want{}},
		{"edit missed, its page never asked for after a reconnect", func(f *fixture) {
			f.drop(converge.FrameUpdate, "m1", 4)
			f.receive(2, converge.Frame{Type: converge.FrameLoad, ChatID: "c1", Messages: []change.Message{f.message("m2").Message}, HasMore: true, Before: "x"})
		}, want{lostInStream: []string{"m1"}}},
		{"edit missed, a newer unacknowledged version carried", func(f *fixture) {
			f.drop(converge.FrameUpdate, "m1", 4)
			f.receive(1, update(m1(11, "unacknowledged")))
			f.message("m1").Message = m1(11, "unacknowledged")
		}, want{ahead: []string{"m1"}}},
		{"tab that never loaded the chat owes nothing", func(f *fixture) {
			f.streams[0].Frames = f.streams[0].Frames[:1] // told of c1, never subscribed
		}, want{}},
		{"all-chats recorder that received nothing", func(f *fixture) {
			f.streams[0] = converge.Stream{Name: "rec", AllChatsFrom: t0}
		}, want{lostInStream: []string{"c1", "m1", "m2"}}}, // c2 and m3: deleted, owed to no one
		{"all-chats recorder told of the chat, never subscribed", func(f *fixture) {
			f.streams[0] = converge.Stream{Name: "rec", AllChatsFrom: t0, Frames: f.streams[0].Frames[:1]}
		}, want{lostInStream: []string{"m1", "m2"}}},
		{"all-chats recorder owes no chat created before it began", func(f *fixture) {
			f.streams[0] = converge.Stream{Name: "rec", AllChatsFrom: ack(1)} // c1's create was sent before
		}, want{}},
		{"all-chats recorder owes no chat deleted without acknowledgement", func(f *fixture) {
			f.streams[0] = converge.Stream{Name: "rec", AllChatsFrom: t0}
			f.chat("c1").IsDeleted, f.chat("c1").Version = true, 12
			f.message("m1").IsDeleted = true
			f.message("m1").Version = 11
		}, want{ahead: []string{"c1", "m1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture()
			tt.mutate(&f)
			r := converge.Compare(f.log, f.db, f.streams)
			got := want{ids(r.Lost), ids(r.Stale), ids(r.Duplicates), ids(r.Regressions), ids(r.StreamDuplicates), ids(r.Ahead),
				ids(r.LostInStream), r.Unlogged}
			for _, c := range []struct {
				kind      string
				got, want []string
			}{
				{"lost", got.lost, tt.want.lost}, {"stale", got.stale, tt.want.stale},
				{"duplicates", got.duplicates, tt.want.duplicates}, {"regressions", got.regressions, tt.want.regressions},
				{"stream duplicates", got.streamDuplicates, tt.want.streamDuplicates}, {"ahead", got.ahead, tt.want.ahead},
				{"lost in stream", got.lostInStream, tt.want.lostInStream},
			} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s = %v, want %v", c.kind, c.got, c.want)
				}
			}
			if got.unlogged != tt.want.unlogged {
				t.Errorf("unlogged = %d, want %d", got.unlogged, tt.want.unlogged)
			}
			fails := len(tt.want.lost)+len(tt.want.stale)+len(tt.want.duplicates)+len(tt.want.regressions)+
				len(tt.want.streamDuplicates)+len(tt.want.lostInStream) > 0
			if r.Failed() != fails {
				t.Errorf("Failed() = %v, want %v", r.Failed(), fails)
			}
			if t.Failed() {
				var buf bytes.Buffer
				_ = converge.WriteSummary(&buf, r, 10)
				t.Logf("report:\n%s", buf.String())
			}
		})
	}
}

// TestCompareCounts checks the report's counts and latencies on the
// converged run: every row written dbDelay and every frame received
// streamDelay after its acknowledgement.
func TestCompareCounts(t *testing.T) {
	t.Parallel()
	f := newFixture()
	r := converge.Compare(f.log, f.db, f.streams)
	if r.Acked != 8 || r.Chats != 2 || r.Messages != 3 || r.RowsChats != 2 || r.RowsMessages != 3 || r.Streams != 1 || r.Frames != 8 {
		t.Errorf("counts: %+v", r)
	}
	// Rows: c1, m1 at its edit, m2 and m3 deleted, c2 deleted.
	if l := r.DBLatency.All; l.Count != 5 || l.Min != dbDelay || l.Max != dbDelay {
		t.Errorf("database latency %s, want 5 samples of %s", l, dbDelay)
	}
	// Frames: every change but m3's, to which the client did not subscribe.
	if l := r.StreamLatency.All; l.Count != 7 || l.Min != streamDelay || l.P99 != streamDelay {
		t.Errorf("stream latency %s, want 7 samples of %s", l, streamDelay)
	}
	if l := r.StreamLatency.ByOp[loadgen.OpMessageDeleted]; l.Count != 1 {
		t.Errorf("stream latency of message deletes %s, want 1 sample", l)
	}
}

// TestStreamLatency checks which frame measures a change: the first that
// carries its version or a newer one, and only if it is pushed, not loaded.
func TestStreamLatency(t *testing.T) {
	t.Parallel()
	v := func(n int64) change.Message {
		return change.Message{ID: "m", ChatID: "c", Content: "x", CreatedAt: t0, UpdatedAt: t0, Version: n}
	}
	log := []loadgen.Record{
		{Op: loadgen.OpMessageCreated, ChatID: "c", MessageID: "m", Version: 1, AckedAt: t0},
		{Op: loadgen.OpMessageUpdated, ChatID: "c", MessageID: "m", Version: 2, AckedAt: t0.Add(10 * time.Millisecond)},
		{Op: loadgen.OpMessageUpdated, ChatID: "c", MessageID: "m", Version: 3, AckedAt: t0.Add(20 * time.Millisecond)},
	}
	s := converge.Stream{Name: "s", Frames: []converge.Received{
		{At: t0.Add(15 * time.Millisecond), Frame: load("c", v(1))}, // loaded: v1 not measured
		{At: t0.Add(40 * time.Millisecond), Frame: update(v(3))},    // v2 never pushed alone: shown with v3, 30 ms after its ack
	}}
	r := converge.Compare(log, converge.DBState{}, []converge.Stream{s})
	if l := r.StreamLatency.All; l.Count != 2 || l.Min != 20*time.Millisecond || l.Max != 30*time.Millisecond {
		t.Errorf("stream latency %s, want 2 samples: 20 ms (v3) and 30 ms (v2)", l)
	}
}

// TestPercentiles checks the nearest-rank percentiles of 1..10 ms.
func TestPercentiles(t *testing.T) {
	t.Parallel()
	var log []loadgen.Record
	var frames []converge.Received
	for i := 1; i <= 10; i++ {
		chat := fmt.Sprintf("c%d", i)
		log = append(log, loadgen.Record{Op: loadgen.OpChatCreated, ChatID: chat, Version: int64(i), AckedAt: t0})
		frames = append(frames, converge.Received{At: t0.Add(time.Duration(11-i) * time.Millisecond),
			Frame: converge.Frame{Type: converge.FrameNewChat, ChatID: chat}})
	}
	r := converge.Compare(log, converge.DBState{}, []converge.Stream{{Name: "s", Frames: frames}})
	l := r.StreamLatency.All
	want := converge.Latency{Count: 10, Min: time.Millisecond, P50: 5 * time.Millisecond, P95: 10 * time.Millisecond,
		P99: 10 * time.Millisecond, Max: 10 * time.Millisecond}
	if l != want {
		t.Errorf("latency %s, want %s", l, want)
	}
	b, err := json.Marshal(l)
	if err != nil || !strings.Contains(string(b), `"p50Ms":5,`) {
		t.Errorf("JSON %s (%v), want p50Ms 5", b, err)
	}
}

// TestReadStream writes a stream with EncodeReceived and reads it back.
func TestReadStream(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "stream.jsonl")
	frames := [][]byte{
		[]byte(`{"type":"load","chatId":"c","messages":[{"id":"m","chatId":"c","content":"x","createdAt":"2025-03-04T05:06:07Z","updatedAt":"2025-03-04T05:06:07Z","isDeleted":false,"version":3}]}`),
		[]byte(`{"type":"delete","chatId":"c"}`),
	}
	var file []byte
	for i, fr := range frames {
		line, err := converge.EncodeReceived(t0.Add(time.Duration(i)*time.Millisecond), 2, fr)
		if err != nil {
			t.Fatal(err)
		}
		file = append(file, line...)
	}
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := converge.ReadStream(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != path || len(s.Frames) != 2 {
		t.Fatalf("read %q with %d frames, want %q with 2", s.Name, len(s.Frames), path)
	}
	got := s.Frames[0]
	if !got.At.Equal(t0) || got.Conn != 2 || got.Frame.Type != converge.FrameLoad || len(got.Frame.Messages) != 1 ||
		got.Frame.Messages[0].Version != 3 || s.Frames[1].Frame.Type != converge.FrameDelete {
		t.Errorf("read %+v", s.Frames)
	}

	if err := os.WriteFile(path, append(file, "{not json\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := converge.ReadStream(path); err == nil || !strings.Contains(err.Error(), "frame 3") {
		t.Errorf("ReadStream of a broken line: %v, want an error naming frame 3", err)
	}
	if _, err := converge.EncodeReceived(t0, 0, []byte("{not json")); err == nil {
		t.Error("EncodeReceived accepted a frame that is not JSON")
	}
}

// TestWriteSummary checks that the summary gives the verdict and names each
// finding.
func TestWriteSummary(t *testing.T) {
	t.Parallel()
	f := newFixture()
	f.db.Messages = f.db.Messages[1:]
	f.drop(converge.FrameUpdate, "m1", 4)
	f.receive(1, update(change.Message{ID: "m2", ChatID: "c1", Version: 1}))
	var buf bytes.Buffer
	if err := converge.WriteSummary(&buf, converge.Compare(f.log, f.db, f.streams), 5); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"convergence FAILED: 1 lost, 0 stale", "1 lost in stream\n", "message m1: no row",
		"message m2 [tab frame 8]: update frame with v1 after v5 in frame 5 (update)",
		"message m1 [tab frame 3]: lost in stream: carried v2 at most; v4 was acknowledged 2025-03-04T05:06:07.004Z",
		"latency ack → stream frame received: n=6"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}
