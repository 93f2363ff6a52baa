// Package store is the persistence layer of the simulated third-party chat
// service ("external"): chats and messages in Postgres with soft deletes, and
// the change feed that the sync worker polls with an opaque cursor.
//
// # Writes
//
// Every write is one READ COMMITTED transaction that changes the row and
// appends its change to the feed table. Writes that touch an existing chat
// (new, edited or deleted messages, deleting the chat) first take a
// transaction-scoped advisory lock on the chat, before they are assigned a
// transaction ID (the lock and the statements are pipelined, so the lock is
// held for one round trip and the commit). Within one chat, writes are
// therefore serialized, and lock order, transaction-ID order, version order,
// commit order and feed order agree. A change's Version comes from one database
// sequence, drawn under that lock: it is unique across the service and
// increases, in feed order, across all changes of one chat and so of each of
// its messages. (Row locks alone would not do: a transaction is assigned its ID
// when it first tries to write, before it waits for another's row lock, so the
// waiter could get the lower ID and the higher version.)
//
// DeleteChat soft-deletes the chat and every message of it that is not
// deleted yet, in one transaction, and appends one message.deleted change per
// such message (in version order) followed by one chat.deleted change, so a
// consumer that applies changes per message by version needs no cascade rule.
//
// # The feed cannot skip a change
//
// Concurrent transactions commit in an order unrelated to the order of any
// sequence or timestamp they drew, so a feed ordered by such a column can show
// change N+1 before change N commits, and a poller that moved past N+1 never
// sees N. Instead, every feed row records the ID of its writing transaction
// (pg_current_xact_id(), a 64-bit xid8 that never wraps) and a sequence number,
// and the feed is ordered by (xid, seq). A reader returns only rows whose xid
// is below the xmin of its own statement's snapshot
// (pg_snapshot_xmin(pg_current_snapshot())): every transaction with a lower
// ID has finished, committed or aborted, and is fully visible to that very
// snapshot, while every transaction still running, and every transaction
// started later, has an ID at or above that horizon. So once a reader returns
// the row at position P, no row at a position below P can ever appear, and
// the cursor (the last position returned) can never step over a row. The
// horizon only moves forward. A reader runs as a single statement outside any
// explicit transaction, so its snapshot is fresh.
//
// The price is delay, never loss: a long transaction anywhere in the Postgres
// cluster (it need not touch this database) holds the horizon back and the
// feed stalls until it ends. Rows of aborted transactions simply never appear.
//
// # Retention
//
// Prune deletes a prefix of the feed in (xid, seq) order: rows older than the
// retention, below the horizon, up to the first row that is not both, in
// batches that are each a short transaction (a running transaction holds the
// horizon back, so one long delete would stall the feed). It records the
// position of the newest deleted row (the watermark). A cursor below the
// watermark has lost rows and gets ErrCursorExpired; an empty cursor starts
// after the watermark, at the oldest retained row. Rows committed later always
// sort above the watermark, because the watermark is below the horizon.
//
// # Cursors
//
// A cursor is base64url (no padding) of 21 bytes: a format version (1), the
// xid and the seq of the last row returned (big-endian uint64 each), and the
// CRC-32 (IEEE) of those 17 bytes, so malformed or mistyped cursors are
// rejected with ErrBadCursor instead of silently reading from elsewhere. A
// cursor whose xid is not yet below the horizon cannot have come from this
// database and is rejected as well.
//
// # Waiting
//
// One goroutine per Store keeps the feed's head (the newest position below the
// horizon) in memory. Waiters compare their cursor with it and sleep on a
// channel that is closed when it moves, so a thousand waiters cost no more
// queries than one. The head is re-read:
//   - when a write of this Store ends, committed or rolled back (a rollback
//     can move the horizon too);
//   - when another process's Store wrote: each Store sends pg_notify after its
//     writes (one at a time, coalescing the writes that end meanwhile) and
//     listens on one dedicated connection taken out of the pool;
//   - every few milliseconds (2 ms doubling to 64 ms) while committed changes
//     wait behind the horizon, because nothing announces the end of the
//     transaction holding it back, which may belong to anything on the
//     Postgres cluster;
//   - on a fallback tick (250 ms by default), for anything else, such as a
//     process that died between its commit and its notification.
//
// The notification is sent after the commit rather than from inside the
// write transaction: a transaction that notifies holds a database-wide lock
// from before its commit until its commit record is flushed, which
// serialized the writers' WAL flushes and cost about a third of the write
// throughput.
package store
