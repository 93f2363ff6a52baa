package converge

import (
	"fmt"
	"time"
)

// checkComplete adds to r the acknowledged final states that stream s owes
// and never carried (Report.LostInStream); the rules are in the package
// doc. dbDeleted holds the chats the database has deleted: a chat whose
// delete was not acknowledged (an answer cut off) is deleted all the same,
// and a client that was away meanwhile is never told of it.
func checkComplete(r *Report, w want, dbDeleted map[string]bool, s Stream) {
	type carried struct {
		version int64 // the highest version a frame carried
		frame   int   // that frame, from 1
		deleted bool  // some frame carried the message deleted
	}
	msgs := map[string]carried{}
	told := map[string]bool{}   // chats some frame named
	loaded := map[string]bool{} // chats the stream subscribed to: a load answered it
	for i, rf := range s.Frames {
		f := rf.Frame
		switch f.Type {
		case FrameLoad, FramePage, FrameUpdate:
			told[f.ChatID] = true
			loaded[f.ChatID] = loaded[f.ChatID] || f.Type == FrameLoad
			for _, m := range f.Messages {
				c := msgs[m.ID]
				if c.frame == 0 || m.Version >= c.version {
					c.version, c.frame = m.Version, i+1
				}
				c.deleted = c.deleted || m.IsDeleted
				msgs[m.ID] = c
			}
		case FrameNewChat:
			told[f.ChatID] = true
		}
	}
	owes := func(chatID string) bool {
		c := w.chats[chatID]
		switch {
		case dbDeleted[chatID] || c != nil && c.deletedBy != nil:
			return false
		case loaded[chatID]:
			return true
		default:
			return !s.AllChatsFrom.IsZero() && c != nil && c.created != nil && !c.created.SentAt.Before(s.AllChatsFrom)
		}
	}
	lost := func(e Entity, id, chatID string, frame int, format string, args ...any) {
		r.LostInStream = append(r.LostInStream, Finding{Entity: e, ID: id, ChatID: chatID, Stream: s.Name, Frame: frame,
			Detail: "lost in stream: " + fmt.Sprintf(format, args...)})
	}
	for id, c := range w.chats {
		if owes(id) && !told[id] {
			lost(EntityChat, id, id, 0, "never told of the chat, created %s", c.created.AckedAt.Format(time.RFC3339Nano))
		}
	}
	for id, m := range w.msgs {
		if !owes(m.chatID) {
			continue
		}
		got, seen := msgs[id]
		last := "never carried"
		if seen {
			last = fmt.Sprintf("carried v%d at most", got.version)
			if got.deleted {
				last += ", deleted"
			}
		}
		switch {
		case m.deletedBy != nil:
			if !got.deleted {
				lost(EntityMessage, id, m.chatID, got.frame, "%s; its delete was acknowledged %s", last,
					m.deletedBy.AckedAt.Format(time.RFC3339Nano))
			}
		case !seen || got.version < m.last.Version:
			lost(EntityMessage, id, m.chatID, got.frame, "%s; v%d was acknowledged %s", last, m.last.Version,
				m.last.AckedAt.Format(time.RFC3339Nano))
		}
	}
}
