package converge

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
	"github.com/chatpoc/chat-poc/internal/change"
)

// Frame is a frame the internal app pushes to its WebSocket clients (see
// apps/internal/api/ws.go): a chat's load (its messages and whether it is
// deleted), an update (one message's new state), newChat, delete (a chat's),
// or error.
type Frame struct {
	Type     string           `json:"type"`
	ChatID   string           `json:"chatId,omitempty"`
	Messages []change.Message `json:"messages,omitempty"`
	Deleted  bool             `json:"deleted,omitempty"`
	// HasMore and Before, on a load or page: older messages exist, and the
	// cursor a "more" hands back for the page before this one.
	HasMore bool   `json:"hasMore,omitempty"`
	Before  string `json:"before,omitempty"`
	Error   string `json:"error,omitempty"`
	// Code and Request, on an error: why, and what it answers (sub, more).
	Code    string `json:"code,omitempty"`
	Request string `json:"request,omitempty"`
}

// The frame types the checker reads (it passes over the others), and
// error, which a recorder reads: the answer to a sub whose load failed.
const (
	FrameLoad    = "load"
	FramePage    = "page" // the answer to a "more": an older page of a loaded chat
	FrameUpdate  = "update"
	FrameNewChat = "newChat"
	FrameDelete  = "delete"
	FrameError   = "error"
)

// Received is one line of a recorded stream (JSON lines, one per frame, in
// the order received):
//
//	{"at":"2025-03-04T05:06:07.891011Z","conn":1,"frame":{"type":"update","chatId":"…","messages":[…]}}
//
// at is when the client received the frame (the recorder's clock, which
// must be the load generator's for latencies to mean anything), conn
// numbers the client's WebSocket connections (it changes when the client
// reconnects; optional), frame is the frame as the server sent it.
type Received struct {
	At    time.Time `json:"at"`
	Conn  int       `json:"conn,omitempty"`
	Frame Frame     `json:"frame"`
}

// Stream is the frames one client received, in order.
type Stream struct {
	// Name identifies the stream in findings (ReadStream: its path).
	Name   string
	Frames []Received
	// AllChatsFrom, when set, says the client subscribed to every chat
	// created from then on (a chaostest.Recorder: it lists the chats at
	// AllChatsFrom and subscribes to every other it learns of); every such
	// chat's changes are owed to the stream. Zero: the client subscribed to
	// some chats (a UI tab) and is owed only the chats it loaded. See
	// Completeness in the package doc.
	AllChatsFrom time.Time
}

// EncodeReceived returns the line of a recorded stream for frame, the raw
// JSON of a frame received at at on connection conn: what a recorder writes.
func EncodeReceived(at time.Time, conn int, frame []byte) ([]byte, error) {
	line, err := json.Marshal(struct {
		At    time.Time       `json:"at"`
		Conn  int             `json:"conn,omitempty"`
		Frame json.RawMessage `json:"frame"`
	}{at, conn, frame})
	if err != nil {
		return nil, fmt.Errorf("encode received frame: %w", err)
	}
	return append(line, '\n'), nil
}

// ReadStream reads a recorded stream (see Received) from path.
func ReadStream(path string) (Stream, error) {
	f, err := os.Open(path)
	if err != nil {
		return Stream{}, fmt.Errorf("read stream: %w", err)
	}
	defer f.Close()
	s := Stream{Name: path}
	dec := json.NewDecoder(f)
	for {
		var r Received
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			return s, nil
		} else if err != nil {
			return Stream{}, fmt.Errorf("read stream %s frame %d: %w", path, len(s.Frames)+1, err)
		}
		s.Frames = append(s.Frames, r)
	}
}

// ReadStreams reads the recorded streams at paths.
func ReadStreams(paths []string) ([]Stream, error) {
	streams := make([]Stream, 0, len(paths))
	for _, p := range paths {
		s, err := ReadStream(p)
		if err != nil {
			return nil, err
		}
		streams = append(streams, s)
	}
	return streams, nil
}

// checkStream adds the regressions and duplicates of stream s to r.
//
// A regression is a message at a lower version than the stream already
// carried for it, in any frame and across reconnects (what a client that did
// not compare versions would show), or a chat's newChat after its delete.
// A duplicate is an update at the version an update already carried on the
// same connection, or a second newChat or delete of a chat on one connection:
// the server pushed one change twice. An update at the version of a load is
// not one (the load and the update raced at subscription), nor is a frame
// repeated on a new connection (the client reloads what it missed).
func checkStream(r *Report, s Stream) {
	type msgSeen struct {
		max      int64 // highest version carried
		maxFrame int   // the frame that carried it
		maxType  string
		upd      int64 // highest version an update carried on connection updConn
		updConn  int
		updFrame int
	}
	type chatSeen struct {
		created, deleted       bool
		createdConn, delConn   int
		createdFrame, delFrame int
		deletedByFrame         bool // a delete frame (not a load) said so
	}
	msgs := map[string]*msgSeen{}
	chats := map[string]*chatSeen{}
	chat := func(id string) *chatSeen {
		c := chats[id]
		if c == nil {
			c = &chatSeen{}
			chats[id] = c
		}
		return c
	}
	finding := func(e Entity, id, chatID string, pos int, format string, args ...any) Finding {
		return Finding{Entity: e, ID: id, ChatID: chatID, Stream: s.Name, Frame: pos, Detail: fmt.Sprintf(format, args...)}
	}
	for i, rf := range s.Frames {
		pos, f, conn := i+1, rf.Frame, rf.Conn
		switch f.Type {
		case FrameLoad, FramePage, FrameUpdate:
			for _, m := range f.Messages {
				st := msgs[m.ID]
				switch {
				case st == nil:
					st = &msgSeen{max: m.Version, maxFrame: pos, maxType: f.Type}
					msgs[m.ID] = st
				case m.Version < st.max:
					r.Regressions = append(r.Regressions, finding(EntityMessage, m.ID, m.ChatID, pos,
						"%s frame with v%d after v%d in frame %d (%s)", f.Type, m.Version, st.max, st.maxFrame, st.maxType))
				case f.Type == FrameUpdate && conn == st.updConn && m.Version == st.upd:
					r.StreamDuplicates = append(r.StreamDuplicates, finding(EntityMessage, m.ID, m.ChatID, pos,
						"v%d pushed again on connection %d (first in frame %d)", m.Version, conn, st.updFrame))
				}
				if m.Version > st.max {
					st.max, st.maxFrame, st.maxType = m.Version, pos, f.Type
				}
				if f.Type == FrameUpdate && (conn != st.updConn || m.Version > st.upd) {
					st.upd, st.updConn, st.updFrame = m.Version, conn, pos
				}
			}
			if f.Type == FrameLoad && f.Deleted {
				c := chat(f.ChatID)
				if !c.deleted {
					c.deleted, c.delConn, c.delFrame = true, conn, pos
				}
			}
		case FrameNewChat:
			c := chat(f.ChatID)
			switch {
			case c.deleted:
				r.Regressions = append(r.Regressions, finding(EntityChat, f.ChatID, f.ChatID, pos,
					"newChat after the chat's delete in frame %d", c.delFrame))
			case c.created && c.createdConn == conn:
				r.StreamDuplicates = append(r.StreamDuplicates, finding(EntityChat, f.ChatID, f.ChatID, pos,
					"newChat again on connection %d (first in frame %d)", conn, c.createdFrame))
			}
			if !c.created || c.createdConn != conn {
				c.created, c.createdConn, c.createdFrame = true, conn, pos
			}
		case FrameDelete:
			c := chat(f.ChatID)
			if c.deleted && c.deletedByFrame && c.delConn == conn {
				r.StreamDuplicates = append(r.StreamDuplicates, finding(EntityChat, f.ChatID, f.ChatID, pos,
					"delete again on connection %d (first in frame %d)", conn, c.delFrame))
			}
			if !c.deletedByFrame || c.delConn != conn {
				c.deleted, c.deletedByFrame, c.delConn, c.delFrame = true, true, conn, pos
			}
		}
	}
}

// streamLatency returns, for each acknowledged write that stream s carried
// first in an update (newChat, delete) frame, the time from its
// acknowledgement to that frame's receipt.
func streamLatency(acked []loadgen.Record, s Stream) []sample {
	type sighting struct {
		at      time.Time
		version int64
		deleted bool
		pushed  bool // an update, not a load
	}
	msgs := map[string][]sighting{}
	created := map[string]time.Time{}
	gone := map[string]sighting{} // the first frame that said a chat is deleted
	for _, rf := range s.Frames {
		f := rf.Frame
		switch f.Type {
		case FrameLoad, FramePage, FrameUpdate:
			for _, m := range f.Messages {
				msgs[m.ID] = append(msgs[m.ID], sighting{rf.At, m.Version, m.IsDeleted, f.Type == FrameUpdate})
			}
			if _, ok := gone[f.ChatID]; !ok && f.Type == FrameLoad && f.Deleted {
				gone[f.ChatID] = sighting{at: rf.At}
			}
		case FrameNewChat:
			if _, ok := created[f.ChatID]; !ok {
				created[f.ChatID] = rf.At
			}
		case FrameDelete:
			if _, ok := gone[f.ChatID]; !ok {
				gone[f.ChatID] = sighting{at: rf.At, pushed: true}
			}
		}
	}
	var out []sample
	first := func(id string, shows func(sighting) bool) (sighting, bool) {
		for _, s := range msgs[id] {
			if shows(s) {
				return s, true
			}
		}
		return sighting{}, false
	}
	for _, r := range acked {
		var (
			s  sighting
			ok bool
		)
		switch r.Op {
		case loadgen.OpMessageCreated, loadgen.OpMessageUpdated:
			if r.Version > 0 {
				s, ok = first(r.MessageID, func(s sighting) bool { return s.version >= r.Version })
			}
		case loadgen.OpMessageDeleted:
			s, ok = first(r.MessageID, func(s sighting) bool { return s.deleted })
		case loadgen.OpChatCreated:
			s.at, ok = created[r.ChatID]
			s.pushed = true
		case loadgen.OpChatDeleted:
			s, ok = gone[r.ChatID]
		}
		if ok && s.pushed {
			out = append(out, sample{r.Op, s.at.Sub(r.AckedAt)})
		}
	}
	return out
}
