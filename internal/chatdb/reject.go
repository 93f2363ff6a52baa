package chatdb

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/chatpoc/chat-poc/internal/change"
)

// ErrRejected is wrapped by an error of Apply when Postgres refused the
// batch for a reason that retrying cannot fix: a value it cannot store
// (SQLSTATE class 22, data exception), a constraint the row breaks (class
// 23) or a limit (class 54, e.g. an index row too large). Some record of the
// batch is at fault; Rejections finds which.
var ErrRejected = errors.New("rejected by Postgres")

// permanentClasses are the SQLSTATE classes of ErrRejected.
var permanentClasses = []string{"22", "23", "54"}

// rejected wraps err with ErrRejected if Postgres refused a statement for a
// reason that retrying cannot fix.
func rejected(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 {
		return err
	}
	for _, class := range permanentClasses {
		if pgErr.Code[:2] == class {
			return fmt.Errorf("%w: %w", ErrRejected, err)
		}
	}
	return err
}

// Rejection is a record of a batch that Postgres refuses on its own.
type Rejection struct {
	// Kind says which of the batch's slices Index is in: change.KindMessage
	// (Messages) or change.KindChat (Chats).
	Kind  change.Kind
	Index int
	// Err is Postgres's reason; it wraps ErrRejected.
	Err error
}

// Rejections finds the records of b (its offsets are ignored) that Postgres
// refuses for a reason retrying cannot fix, writing nothing: it tries the
// records in a transaction it rolls back, halving a refused group until the
// records at fault stand alone — about 2·log2(n) statements per bad record
// of n.
//
// It returns an error, and no rejections, if Postgres fails for another
// reason (unreachable, failing over). It returns no rejections if no record
// is refused on its own (a batch refused as a whole for a reason that no
// subset reproduces).
func (db *DB) Rejections(ctx context.Context, b Batch) ([]Rejection, error) {
	all := make([]Rejection, 0, len(b.Messages)+len(b.Chats))
	for i := range b.Messages {
		all = append(all, Rejection{Kind: change.KindMessage, Index: i})
	}
	for i := range b.Chats {
		all = append(all, Rejection{Kind: change.KindChat, Index: i})
	}
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return nil, fmt.Errorf("find rejected records: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var found []Rejection
	// try writes group under a savepoint and rolls it back; a refused group
	// of more than one is split in two, each tried again.
	var try func(group []Rejection) error
	try = func(group []Rejection) error {
		err := trial(ctx, tx, b, group)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, ErrRejected):
			return err
		case len(group) == 1:
			found = append(found, Rejection{Kind: group[0].Kind, Index: group[0].Index, Err: err})
			return nil
		}
		half := len(group) / 2
		if err := try(group[:half]); err != nil {
			return err
		}
		return try(group[half:])
	}
	if err := try(all); err != nil {
		return nil, fmt.Errorf("find rejected records of %d: %w", len(all), err)
	}
	return found, nil
}

// trial writes the records of b that group names inside a savepoint of tx,
// then rolls the savepoint back, and returns the error the writes met.
func trial(ctx context.Context, tx pgx.Tx, b Batch, group []Rejection) error {
	var msgs []change.Message
	var chats []change.Chat
	for _, r := range group {
		if r.Kind == change.KindChat {
			chats = append(chats, b.Chats[r.Index])
		} else {
			msgs = append(msgs, b.Messages[r.Index])
		}
	}
	recs := newRecords(msgs, chats)
	// Nothing is committed: the chat locks that order Apply's writes are
	// not needed, and taking them group by group could deadlock.
	recs.locks = nil
	q := &pgx.Batch{}
	recs.queue(q)
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	res := sp.SendBatch(ctx, q)
	_, err = recs.exec(res)
	if closeErr := res.Close(); err == nil {
		err = closeErr
	}
	if rbErr := sp.Rollback(ctx); rbErr != nil && err == nil {
		err = fmt.Errorf("roll back to savepoint: %w", rbErr)
	}
	return rejected(err)
}
