package converge

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/loadgen"
)

// verdict is how a row compares with the log's final state.
type verdict int

const (
	match verdict = iota
	stale
	ahead
)

// compareDB adds to r what the database's rows say against the log's final
// state w: lost, stale, ahead and duplicate rows, unlogged rows, and the
// database latency.
func compareDB(r *Report, w want, db DBState) {
	r.RowsChats, r.RowsMessages = len(db.Chats), len(db.Messages)
	chats := map[string][]ChatRow{}
	for _, c := range db.Chats {
		chats[c.ID] = append(chats[c.ID], c)
	}
	msgs := map[string][]MessageRow{}
	for _, m := range db.Messages {
		msgs[m.ID] = append(msgs[m.ID], m)
	}
	var samples []sample
	add := func(v verdict, f Finding) {
		switch v {
		case stale:
			r.Stale = append(r.Stale, f)
		case ahead:
			r.Ahead = append(r.Ahead, f)
		}
	}

	for id, c := range w.chats {
		rows := chats[id]
		if len(rows) == 0 {
			r.Lost = append(r.Lost, Finding{Entity: EntityChat, ID: id, ChatID: id, Detail: "no row; the log has " + c.String()})
			continue
		}
		row := newest(rows, func(c ChatRow) int64 { return c.Version })
		v, detail := judgeChat(c, row)
		add(v, Finding{Entity: EntityChat, ID: id, ChatID: id, Detail: detail})
		if v == match {
			samples = append(samples, chatDBSample(c, row)...)
		}
	}
	for id, m := range w.msgs {
		rows := msgs[id]
		if len(rows) == 0 {
			r.Lost = append(r.Lost, Finding{Entity: EntityMessage, ID: id, ChatID: m.chatID, Detail: "no row; the log has " + m.String()})
			continue
		}
		row := newest(rows, func(m MessageRow) int64 { return m.Version })
		chatDeleted := false
		for _, c := range chats[row.ChatID] {
			chatDeleted = chatDeleted || c.IsDeleted
		}
		v, detail := judgeMessage(m, row, chatDeleted)
		add(v, Finding{Entity: EntityMessage, ID: id, ChatID: m.chatID, Detail: detail})
		if v == match {
			samples = append(samples, messageDBSample(m, row)...)
		}
	}
	r.DBLatency = summarize(samples)

	for id, rows := range chats {
		if len(rows) > 1 {
			r.Duplicates = append(r.Duplicates, Finding{Entity: EntityChat, ID: id, ChatID: id,
				Detail: fmt.Sprintf("%d rows with this ID", len(rows))})
		}
		if w.chats[id] == nil {
			r.Unlogged += len(rows)
		}
	}
	for id, rows := range msgs {
		if len(rows) > 1 {
			r.Duplicates = append(r.Duplicates, Finding{Entity: EntityMessage, ID: id, ChatID: rows[0].ChatID,
				Detail: fmt.Sprintf("%d rows with this ID", len(rows))})
		}
		if w.msgs[id] == nil {
			r.Unlogged += len(rows)
		}
	}
	r.Duplicates = append(r.Duplicates, sameMessage(msgs)...)
}

// sameMessage finds messages stored under more than one ID: rows of one
// chat with the same creation time and content. External stamps each
// message with its own commit time under the chat's lock, so two distinct
// messages of a chat do not share both.
func sameMessage(msgs map[string][]MessageRow) []Finding {
	type key struct {
		chatID, content string
		created         int64
	}
	ids := map[key][]string{}
	for id, rows := range msgs {
		m := rows[0]
		k := key{m.ChatID, m.Content, m.CreatedAt.UnixMicro()}
		ids[k] = append(ids[k], id)
	}
	var out []Finding
	for k, same := range ids {
		if len(same) < 2 {
			continue
		}
		for _, id := range same {
			out = append(out, Finding{Entity: EntityMessage, ID: id, ChatID: k.chatID,
				Detail: fmt.Sprintf("one message under %d IDs (%s): same chat, creation time %s and content %q",
					len(same), strings.Join(slices.Sorted(slices.Values(same)), ", "), time.UnixMicro(k.created).UTC().Format(time.RFC3339Nano), short(k.content))})
		}
	}
	return out
}

// judgeChat compares a chat's row with its final state in the log.
func judgeChat(c *wantChat, row ChatRow) (verdict, string) {
	got := fmt.Sprintf("row v%d deleted=%t", row.Version, row.IsDeleted)
	switch {
	case c.deletedBy != nil && !row.IsDeleted:
		return stale, got + "; the log has " + c.String()
	case c.deletedBy != nil || c.created == nil:
		return match, ""
	case row.Version < c.created.Version:
		return stale, got + "; the log has " + c.String()
	case row.IsDeleted && row.Version > c.created.Version:
		return ahead, got + ": deleted by a write the log does not have; the log has " + c.String()
	case row.IsDeleted || row.Version != c.created.Version:
		return stale, got + "; the log has " + c.String()
	}
	return match, ""
}

// judgeMessage compares a message's row with its final state in the log;
// chatDeleted says whether the row's chat is stored deleted.
func judgeMessage(m *wantMessage, row MessageRow, chatDeleted bool) (verdict, string) {
	got := fmt.Sprintf("row in chat %s v%d deleted=%t content %q", row.ChatID, row.Version, row.IsDeleted, short(row.Content))
	want := "; the log has " + m.String()
	switch {
	case row.ChatID != m.chatID:
		return stale, got + want
	case m.deletedBy != nil:
		if !row.IsDeleted || (m.last != nil && row.Version < m.last.Version) {
			return stale, got + want
		}
		return match, ""
	case m.last == nil:
		return match, "" // only a delete was logged, and it is not: nothing to compare
	case row.Version > m.last.Version:
		return ahead, got + ": newer than the log" + want
	case row.Version < m.last.Version:
		return stale, got + want
	case row.IsDeleted && chatDeleted:
		return ahead, got + ": deleted with its chat by a delete the log does not have" + want
	case row.IsDeleted || row.Content != m.last.Content:
		return stale, got + want
	}
	return match, ""
}

// chatDBSample is the latency of a chat row that matches the log.
func chatDBSample(c *wantChat, row ChatRow) []sample {
	switch {
	case c.deletedBy != nil:
		return []sample{{c.deletedBy.Op, row.ReplicatedAt.Sub(c.deletedBy.AckedAt)}}
	case c.created != nil:
		return []sample{{c.created.Op, row.ReplicatedAt.Sub(c.created.AckedAt)}}
	}
	return nil
}

// messageDBSample is the latency of a message row that matches the log.
func messageDBSample(m *wantMessage, row MessageRow) []sample {
	switch {
	case m.deletedBy != nil:
		return []sample{{m.deletedBy.Op, row.ReplicatedAt.Sub(m.deletedBy.AckedAt)}}
	case m.last != nil:
		return []sample{{m.last.Op, row.ReplicatedAt.Sub(m.last.AckedAt)}}
	}
	return nil
}

// newest returns the row of the highest version among rows of one ID.
func newest[T any](rows []T, version func(T) int64) T {
	best := rows[0]
	for _, r := range rows[1:] {
		if version(r) > version(best) {
			best = r
		}
	}
	return best
}

// String describes the chat's final state in the log.
func (c *wantChat) String() string {
	var parts []string
	if c.created != nil {
		parts = append(parts, fmt.Sprintf("created v%d acked %s", c.created.Version, stamp(c.created.AckedAt)))
	}
	if c.deletedBy != nil {
		parts = append(parts, "deleted acked "+stamp(c.deletedBy.AckedAt))
	}
	return strings.Join(parts, ", ")
}

// String describes the message's final state in the log.
func (m *wantMessage) String() string {
	var parts []string
	if m.last != nil {
		parts = append(parts, fmt.Sprintf("chat %s v%d content %q acked %s", m.chatID, m.last.Version, short(m.last.Content), stamp(m.last.AckedAt)))
	}
	if d := m.deletedBy; d != nil {
		what := "deleted"
		if d.Op == loadgen.OpChatDeleted {
			what = "deleted with its chat"
		}
		parts = append(parts, what+" acked "+stamp(d.AckedAt))
	}
	return strings.Join(parts, ", ")
}

func stamp(t time.Time) string { return t.UTC().Format("15:04:05.000000") }

// short cuts s for a finding's detail.
func short(s string) string {
	const limit = 60
	if len(s) <= limit {
		return s
	}
	return strings.ToValidUTF8(s[:limit], "") + "…"
}
