// Package converge checks that the internal system converged to the external
// service's state. Its ground truth is the load generator's log of
// acknowledged writes (loadgen.Record); it compares that log with the rows of
// the internal database and with the WebSocket streams that internal UI
// clients recorded, and reports:
//
//   - lost: a chat or message the log acknowledged that has no row at all;
//   - stale: a row whose final state is not the log's final state (older
//     version, other content, deleted flag, chat);
//   - duplicate rows: two rows of one ID, or one message stored under two IDs
//     (same chat, creation time and content);
//   - regressions: a stream frame carrying an older version of a message than
//     one the stream already carried, or a chat created again after its
//     delete;
//   - stream duplicates: one change pushed twice on one connection;
//   - lost in stream: a stream that never carried an acknowledged write's
//     final state it owes (completeness, below);
//   - latency: acknowledgement → database row written, and acknowledgement →
//     stream frame received.
//
// # Completeness
//
// A stream owes chat C — the final state of each of C's messages and that C
// exists — if C is not deleted, and either the stream loaded C (a load
// frame of C answers the client's subscription: a client that subscribes
// is assumed to stay subscribed to the end of the recording), or the
// stream subscribes to every chat (Stream.AllChatsFrom is set) and C's
// acknowledged create was sent at or after AllChatsFrom. A chat is deleted
// if the log acknowledged its delete or the database has it deleted (a
// delete whose acknowledgement was lost); its changes are owed to no
// stream, since a client that was away when it went is never told of it.
//
// The final state of a message is its acknowledged create or update of the
// highest version, or deleted if its delete was acknowledged. A stream
// carries it if some load, page or update frame, on any connection, carries
// the message at that version or a newer one
// (a newer one: a write whose acknowledgement was lost) — or, for a
// deleted message, carries it deleted. Where the frame sits does not
// matter: a client that subscribed after the write is shown it by its
// load, one that was away is shown it by the load that follows its
// reconnection. A load is a chat's newest page: a stream that loaded a
// chat owes its older messages too, so a client recorded for the check
// asks for the older pages ("more") until the server says there are no
// more, as chaostest.Recorder does. That C exists is carried by any frame
// naming C (newChat, load, page, update). A stream must be recorded until after the log's last
// write was delivered: a write acknowledged after it stopped is owed all
// the same.
//
// Compare is the comparison, a pure function of data in memory. LoadDB,
// ReadStream and loadgen.ReadLog read its inputs; Check and Await wire them
// for a caller that has a database pool.
package converge

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/internal/change"
)

// Entity says what a finding is about.
type Entity string

// The entities the checker compares.
const (
	EntityChat    Entity = "chat"
	EntityMessage Entity = "message"
)

// ChatRow is a row of the internal database's chats table.
type ChatRow struct {
	ID        string `json:"id"`
	IsDeleted bool   `json:"isDeleted"`
	Version   int64  `json:"version"`
	// ReplicatedAt is when the writer last changed the row (the Postgres
	// server's clock at the start of the writing transaction).
	ReplicatedAt time.Time `json:"replicatedAt"`
}

// MessageRow is a row of the internal database's messages table.
type MessageRow struct {
	change.Message
	// ReplicatedAt is when the writer last changed the row, as for ChatRow.
	ReplicatedAt time.Time `json:"replicatedAt"`
}

// DBState is what the internal database holds: every row, from one snapshot.
type DBState struct {
	Chats    []ChatRow
	Messages []MessageRow
}

// Finding is one thing the checker found wrong (or, for Report.Ahead, worth
// knowing).
type Finding struct {
	Entity Entity `json:"entity"`
	ID     string `json:"id"`
	ChatID string `json:"chatId,omitempty"`
	// Detail says what was expected and what was found.
	Detail string `json:"detail"`
	// Stream and Frame locate a stream finding: the stream's name and the
	// frame's position in it, from 1.
	Stream string `json:"stream,omitempty"`
	Frame  int    `json:"frame,omitempty"`
}

// Report is the outcome of a comparison.
type Report struct {
	// Acked is the number of acknowledged writes in the log; Chats and
	// Messages the chats and messages they name. Unusable counts records
	// without the ID they need (a response the load generator could not
	// parse); they are left out.
	Acked    int `json:"acked"`
	Chats    int `json:"chats"`
	Messages int `json:"messages"`
	Unusable int `json:"unusable"`
	// RowsChats and RowsMessages are the rows read from the database;
	// Unlogged counts those whose ID the log does not name (writes whose
	// acknowledgement the load generator never got, or another client's).
	RowsChats    int `json:"rowsChats"`
	RowsMessages int `json:"rowsMessages"`
	Unlogged     int `json:"unlogged"`
	// Streams and Frames count the recorded streams and their frames.
	Streams int `json:"streams"`
	Frames  int `json:"frames"`

	Lost             []Finding `json:"lost"`
	Stale            []Finding `json:"stale"`
	Duplicates       []Finding `json:"duplicates"`
	Regressions      []Finding `json:"regressions"`
	StreamDuplicates []Finding `json:"streamDuplicates"`
	// LostInStream lists, per stream, the final states it owes and never
	// carried (see Completeness in the package doc).
	LostInStream []Finding `json:"lostInStream"`
	// Ahead lists rows newer than the log's final acknowledged state: a
	// write external committed whose acknowledgement was lost (a timeout, a
	// dropped connection) explains each. They are not failures: the log
	// cannot tell what external's final state is for them.
	Ahead []Finding `json:"ahead"`

	// DBLatency is acknowledgement → row written, for the rows whose last
	// write is the final acknowledged change; see Compare.
	DBLatency Latencies `json:"dbLatency"`
	// StreamLatency is acknowledgement → first frame that carried the
	// change, over every stream.
	StreamLatency Latencies `json:"streamLatency"`
}

// Failed reports whether anything was lost, stale, duplicated, regressed
// or lost in a stream.
func (r Report) Failed() bool {
	return len(r.Lost)+len(r.Stale)+len(r.Duplicates)+len(r.Regressions)+len(r.StreamDuplicates)+len(r.LostInStream) > 0
}

// Converged reports whether the database holds the log's final state:
// nothing lost or stale. Waiting longer cannot mend a duplicate or a
// regression, so Await waits only for this. It says nothing of the
// streams: a recording whose frames are still arriving is checked again by
// its caller (see chaostest).
func (r Report) Converged() bool { return len(r.Lost)+len(r.Stale) == 0 }

// Compare compares the log of acknowledged writes with the database's rows
// and the recorded streams.
//
// The log's final state of a message is its acknowledged create or update of
// the highest version, deleted if a delete of the message or of its chat was
// acknowledged (external answers deletes without a version; a delete is
// final). A chat's is its create, deleted if a delete was acknowledged.
//
// Database latency is measured to the row's replication time, which is its
// last write's: only for rows whose version is the final acknowledged one
// (not deleted), or that are deleted as acknowledged (from the first
// acknowledged delete). Stream latency is measured to the first frame that
// carried the change's version or a newer one (deletes: the deleted state),
// and only if that frame is an update (newChat, delete): a load carries
// whatever was written before the client subscribed.
func Compare(acked []loadgen.Record, db DBState, streams []Stream) Report {
	w := expect(acked)
	r := Report{
		Acked:    len(acked),
		Chats:    len(w.chats),
		Messages: len(w.msgs),
		Unusable: w.unusable,
		Streams:  len(streams),
	}
	compareDB(&r, w, db)
	dbDeleted := map[string]bool{}
	for _, c := range db.Chats {
		dbDeleted[c.ID] = dbDeleted[c.ID] || c.IsDeleted
	}
	var samples []sample
	for _, s := range streams {
		r.Frames += len(s.Frames)
		checkStream(&r, s)
		checkComplete(&r, w, dbDeleted, s)
		samples = append(samples, streamLatency(acked, s)...)
	}
	r.StreamLatency = summarize(samples)
	for _, fs := range []*[]Finding{&r.Lost, &r.Stale, &r.Duplicates, &r.Ahead, &r.LostInStream} {
		slices.SortFunc(*fs, func(a, b Finding) int {
			return cmp.Or(strings.Compare(a.Stream, b.Stream), strings.Compare(string(a.Entity), string(b.Entity)),
				strings.Compare(a.ID, b.ID), strings.Compare(a.Detail, b.Detail))
		})
	}
	for _, fs := range []*[]Finding{&r.Lost, &r.Stale, &r.Duplicates, &r.Regressions, &r.StreamDuplicates, &r.LostInStream, &r.Ahead} {
		if *fs == nil {
			*fs = []Finding{} // [] in JSON, not null
		}
	}
	return r
}

// wantChat is a chat's final state according to the log.
type wantChat struct {
	created   *loadgen.Record // the acknowledged create, if the log has it
	deletedBy *loadgen.Record // the first acknowledged delete, if any
}

// wantMessage is a message's final state according to the log.
type wantMessage struct {
	chatID    string
	last      *loadgen.Record // the acknowledged create or update of the highest version
	deletedBy *loadgen.Record // the first acknowledged delete of the message or its chat
}

// want is the log's final state of every chat and message it names.
type want struct {
	chats    map[string]*wantChat
	msgs     map[string]*wantMessage
	unusable int
}

// expect folds the log into the final state of each chat and message.
func expect(acked []loadgen.Record) want {
	w := want{chats: map[string]*wantChat{}, msgs: map[string]*wantMessage{}}
	earlier := func(old *loadgen.Record, r *loadgen.Record) *loadgen.Record {
		if old == nil || r.AckedAt.Before(old.AckedAt) {
			return r
		}
		return old
	}
	for i := range acked {
		r := &acked[i]
		switch r.Op {
		case loadgen.OpChatCreated, loadgen.OpChatDeleted:
			if r.ChatID == "" {
				w.unusable++
				continue
			}
			c := w.chats[r.ChatID]
			if c == nil {
				c = &wantChat{}
				w.chats[r.ChatID] = c
			}
			if r.Op == loadgen.OpChatCreated {
				c.created = r
			} else {
				c.deletedBy = earlier(c.deletedBy, r)
			}
		case loadgen.OpMessageCreated, loadgen.OpMessageUpdated, loadgen.OpMessageDeleted:
			if r.ChatID == "" || r.MessageID == "" {
				w.unusable++
				continue
			}
			m := w.msgs[r.MessageID]
			if m == nil {
				m = &wantMessage{chatID: r.ChatID}
				w.msgs[r.MessageID] = m
			}
			switch {
			case r.Op == loadgen.OpMessageDeleted:
				m.deletedBy = earlier(m.deletedBy, r)
			case m.last == nil || r.Version > m.last.Version:
				m.last = r
			}
		default:
			w.unusable++
		}
	}
	// A chat's delete deletes every message acknowledged in it: a create
	// after the delete would have been refused.
	for _, m := range w.msgs {
		if c := w.chats[m.chatID]; c != nil && c.deletedBy != nil {
			m.deletedBy = earlier(m.deletedBy, c.deletedBy)
		}
	}
	return w
}
