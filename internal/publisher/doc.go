// Package publisher writes pages of changes to Kafka transactionally, with
// fencing of stale producers and failover between the two regional clusters.
//
// The sync activity publishes each page of changes it polled from external's
// change feed with one [Publisher.Publish] call and moves its checkpoint only
// after Publish returned: the page is then committed on one cluster (acks=all,
// idempotent, transactional producer) and visible there to read_committed
// consumers.
//
// # Fencing
//
// Every Publisher of every worker uses the same transactional.id. The producer
// of a cluster is created on first use and calls InitTransactions once; that
// call bumps the producer epoch of the transactional.id on that cluster, which
// aborts any transaction a previous holder left open and fences every older
// producer: its next transaction fails with a fatal "fenced" error and none of
// its records become visible to read_committed consumers (our consumers and
// MirrorMaker 2 read committed only). Publish reports that as [ErrFenced],
// discards the producer and does not try another cluster: the caller is a
// stale ("zombie") activity attempt and must stop. Other fatal producer errors
// are reported the same way, because the only safe reaction is the same.
//
// Fencing has limits, all of which leave duplicates, never loss:
//
//   - It is per cluster. A producer on cluster b fences nothing on cluster a;
//     a zombie that can still reach a keeps publishing there until something
//     initializes the transactional.id on a again. Both copies meet on both
//     clusters through MirrorMaker 2.
//   - It is per producer, not per caller. Callers that share one Publisher
//     share its producer and do not fence each other (Publish calls are only
//     serialized). A Publisher that reported ErrFenced creates and initializes
//     a new producer on its next Publish, fencing whoever holds the id then,
//     so a stale caller must not call again; and a long-lived Publisher that
//     another worker fenced while it was idle reports ErrFenced once to the
//     next caller even if that caller is current (its retry then succeeds).
//   - A transaction whose commit acknowledgement was lost (timeout, failover)
//     may still have committed; the batch is then published again, on the
//     next cluster or by the next attempt.
//
// Consumers absorb duplicates by comparing versions, as DESIGN.md requires.
//
// # Failover
//
// Clusters are tried in preference order. A cluster counts as unreachable when
// creating/initializing its producer, delivering the batch or committing does
// not finish within OperationTimeout, or fails with a non-fatal error whose
// outcome is unknown. Its producer is then discarded (the transaction aborted
// if possible, the producer closed, both bounded by OperationTimeout; a close
// that does not finish in time is abandoned to a background goroutine rather
// than blocking the caller) and the whole batch is published again on the next
// cluster within the same call. Publish fails with [ErrUnavailable] only when
// every cluster failed. The cluster that took the last batch stays the first
// choice (sticky, see [Publisher.Current]) until it fails; then the list is
// cycled through again. There is no failback to the preferred cluster while
// the current one works.
//
// A failed transaction on a reachable cluster is not a reason to fail over: a
// record the cluster refused for good (too large, invalid topic, ...) aborts
// the transaction and returns [ErrRejected]; other abortable errors abort it
// and return an error the caller may retry.
//
// # Confirmation
//
// A coordinator acknowledges a commit once it has logged its decision; it
// writes the commit markers into the partitions afterwards. Kafka 4.x can skip
// the markers of a partition that has no leader at that moment (see
// KAFKA-20734 and confirm.go), leaving the records in a transaction that
// read_committed consumers never see until an operator aborts it. So after
// every commit Publish queries the partitions' last stable offsets
// (ListOffsets, read_committed) until each is past the batch, for at most
// OperationTimeout (usually one query, a few milliseconds). A commit that is
// not confirmed counts as a failure of the cluster: the batch is published on
// the next one (a duplicate if the first copy becomes visible later), the
// event is logged and reported to Options.OnUnconfirmed.
//
// # What a committed Publish guarantees
//
//   - All records of the call are visible together or not at all to
//     read_committed consumers of the cluster that took them.
//   - Records with the same topic and key keep the order they had in recs: a
//     key maps to one partition (murmur2, as Java clients do) and the
//     idempotent producer keeps order within a partition across retries.
//     Nothing orders records of different keys, or of different calls that
//     landed on different clusters.
//   - The cluster named in the result acknowledged the commit, and its
//     read_committed consumers can read the records. Whether MirrorMaker 2
//     has copied them to the other cluster yet is not known.
//
// Transactions are kept short (TransactionTimeout, default 10 s) because a
// producer that dies with a transaction open blocks read_committed consumers
// of the partitions it wrote until the coordinator aborts the transaction on
// timeout or a new InitTransactions does.
package publisher
