package store

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"time"
)

// DefaultChangesLimit is the page size of Changes when its limit is not
// positive; MaxChangesLimit caps it.
const (
	DefaultChangesLimit = 100
	MaxChangesLimit     = 1000
)

// position is a place in the feed: the (xid, seq) of a feed row. The zero
// position is before every row.
type position struct {
	xid uint64
	seq int64
}

func (p position) less(q position) bool {
	return p.xid < q.xid || (p.xid == q.xid && p.seq < q.seq)
}

func (p position) isZero() bool { return p == position{} }

// parsePosition builds a position from the text forms of an xid8 and a bigint.
func parsePosition(xid string, seq int64) (position, error) {
	x, err := strconv.ParseUint(xid, 10, 64)
	if err != nil {
		return position{}, fmt.Errorf("parse xid8 %q: %w", xid, err)
	}
	return position{xid: x, seq: seq}, nil
}

// Cursor layout, see the package documentation.
const (
	cursorFormat = 1
	cursorBody   = 1 + 8 + 8
	cursorLen    = cursorBody + 4
)

var cursorEncoding = base64.RawURLEncoding.Strict()

func encodeCursor(p position) string {
	var b [cursorLen]byte
	b[0] = cursorFormat
	binary.BigEndian.PutUint64(b[1:9], p.xid)
	binary.BigEndian.PutUint64(b[9:17], uint64(p.seq))
	binary.BigEndian.PutUint32(b[cursorBody:], crc32.ChecksumIEEE(b[:cursorBody]))
	return cursorEncoding.EncodeToString(b[:])
}

// decodeCursor returns the position of a cursor; "" is the zero position.
func decodeCursor(cursor string) (position, error) {
	if cursor == "" {
		return position{}, nil
	}
	b, err := cursorEncoding.DecodeString(cursor)
	if err != nil || len(b) != cursorLen || b[0] != cursorFormat ||
		binary.BigEndian.Uint32(b[cursorBody:]) != crc32.ChecksumIEEE(b[:cursorBody]) {
		return position{}, ErrBadCursor
	}
	seq := binary.BigEndian.Uint64(b[9:17])
	if seq > math.MaxInt64 {
		return position{}, ErrBadCursor
	}
	return position{xid: binary.BigEndian.Uint64(b[1:9]), seq: int64(seq)}, nil
}

// changesSQL reads one page of the feed after ($1, $2) below the horizon of
// its own snapshot, together with the watermark of pruned rows and the
// horizon itself, in one statement so that all three come from one snapshot.
// It always returns at least one row (feed_state has exactly one).
const changesSQL = `
SELECT w.pruned_xid::text, w.pruned_seq, pg_snapshot_xmin(pg_current_snapshot())::text,
       c.xid::text, c.seq, c.kind, c.chat_id::text, c.message_id::text, c.content,
       c.created_at, c.updated_at, c.is_deleted, c.version, c.at
FROM feed_state w
LEFT JOIN LATERAL (
    SELECT * FROM changes
    WHERE (xid, seq) > ($1::text::xid8, $2::bigint)
      AND xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY xid, seq
    LIMIT $3
) c ON true
ORDER BY c.xid, c.seq`

// Changes returns the changes after cursor, oldest first, at most limit of
// them (DefaultChangesLimit when limit is not positive, at most
// MaxChangesLimit), and the cursor to pass next: the position of the last
// change returned, or cursor itself when there is nothing new. The empty
// cursor starts at the oldest retained change. It returns ErrBadCursor for a
// cursor this feed did not issue and ErrCursorExpired for one older than the
// retained history.
func (s *Store) Changes(ctx context.Context, cursor string, limit int) ([]Change, string, error) {
	after, err := decodeCursor(cursor)
	if err != nil {
		return nil, "", fmt.Errorf("read changes: %w", err) // the cursor is arbitrary input: not logged
	}
	if limit <= 0 {
		limit = DefaultChangesLimit
	}
	limit = min(limit, MaxChangesLimit)
	rows, err := s.pool.Query(ctx, changesSQL, strconv.FormatUint(after.xid, 10), after.seq, limit)
	if err != nil {
		return nil, "", fmt.Errorf("read changes: %w", err)
	}
	defer rows.Close()
	var (
		changes   = []Change{}
		last      position
		watermark position
		horizon   uint64
	)
	for rows.Next() {
		var (
			wXid, hXid           string
			wSeq                 int64
			xid, chatID, kind    *string
			seq, version         *int64
			messageID, content   *string
			createdAt, updatedAt *time.Time
			isDeleted            *bool
			at                   *time.Time
		)
		if err := rows.Scan(&wXid, &wSeq, &hXid, &xid, &seq, &kind, &chatID, &messageID, &content,
			&createdAt, &updatedAt, &isDeleted, &version, &at); err != nil {
			return nil, "", fmt.Errorf("read changes: %w", err)
		}
		if watermark, err = parsePosition(wXid, wSeq); err != nil {
			return nil, "", fmt.Errorf("read changes: %w", err)
		}
		if horizon, err = strconv.ParseUint(hXid, 10, 64); err != nil {
			return nil, "", fmt.Errorf("read changes: parse horizon %q: %w", hXid, err)
		}
		if xid == nil { // no change after the cursor
			continue
		}
		if last, err = parsePosition(*xid, *seq); err != nil {
			return nil, "", fmt.Errorf("read changes: %w", err)
		}
		c := Change{Kind: ChangeKind(*kind), ChatID: *chatID, Version: *version, At: *at}
		if messageID != nil {
			c.Message = &Message{ID: *messageID, ChatID: *chatID, Content: *content, CreatedAt: *createdAt,
				UpdatedAt: *updatedAt, IsDeleted: *isDeleted, Version: *version}
		}
		changes = append(changes, c)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("read changes: %w", err)
	}
	switch {
	case after.xid >= horizon && !after.isZero():
		// Every cursor this feed issued is below the horizon, which only
		// moves forward; this one comes from elsewhere (another database
		// server, a reset database) and would silently skip changes.
		return nil, "", fmt.Errorf("read changes after cursor %q: ahead of the feed: %w", cursor, ErrBadCursor)
	case !after.isZero() && after.less(watermark):
		return nil, "", fmt.Errorf("read changes after cursor %q: %w", cursor, ErrCursorExpired)
	case len(changes) == 0:
		return changes, cursor, nil
	}
	return changes, encodeCursor(last), nil
}

// pruneBatch is how many feed rows one Prune statement deletes at most. Each
// statement is its own transaction, and a transaction holds the horizon back
// while it runs: many short ones delay the feed by milliseconds, one long one
// would stall it for as long as it takes.
const pruneBatch = 5000

// pruneSQL deletes the first $2 rows of the prefix of the feed, in (xid, seq)
// order, whose rows are all older than the retention ($1 microseconds) and
// below the horizon, and moves the watermark to the newest row deleted.
const pruneSQL = `
WITH h AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin,
           now() - $1::bigint * interval '1 microsecond' AS cutoff
), stop AS MATERIALIZED (
    SELECT c.xid, c.seq FROM changes c, h
    WHERE c.xid >= h.xmin OR c.at >= h.cutoff
    ORDER BY c.xid, c.seq
    LIMIT 1
), victims AS MATERIALIZED (
    SELECT c.xid, c.seq FROM changes c, h
    WHERE c.xid < h.xmin AND c.at < h.cutoff
      AND NOT EXISTS (SELECT 1 FROM stop WHERE (c.xid, c.seq) >= (stop.xid, stop.seq))
    ORDER BY c.xid, c.seq
    LIMIT $2
), del AS (
    DELETE FROM changes c USING victims v
    WHERE c.xid = v.xid AND c.seq = v.seq
    RETURNING c.xid, c.seq
), last AS (
    SELECT xid, seq FROM del ORDER BY xid DESC, seq DESC LIMIT 1
), moved AS (
    UPDATE feed_state w SET pruned_xid = last.xid, pruned_seq = last.seq
    FROM last
    WHERE (last.xid, last.seq) > (w.pruned_xid, w.pruned_seq)
)
SELECT count(*) FROM del`

// Prune deletes the feed entries older than the retention and returns how
// many it deleted. Cursors that point before a deleted entry expire. It
// deletes a prefix of the feed, so an entry older than the retention that
// follows a younger one (the younger written by a long transaction) waits
// for the next Prune, as do entries still behind the horizon.
func (s *Store) Prune(ctx context.Context) (int64, error) {
	var total int64
	defer func() {
		// The watermark moved: this Store's waiters with expired cursors
		// learn it before Prune returns; other Stores at their next tick.
		if total > 0 {
			if _, _, err := s.refresh(ctx); err != nil {
				s.signal()
			}
		}
	}()
	for {
		var n int64
		if err := s.pool.QueryRow(ctx, pruneSQL, s.opts.Retention.Microseconds(), pruneBatch).Scan(&n); err != nil {
			return total, fmt.Errorf("prune changes older than %s: %w", s.opts.Retention, err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}
