package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotFound reports that a chat, or a chat/message pair, does not exist, or,
// for writes, that it is deleted.
var ErrNotFound = errors.New("not found")

// ErrBadCursor reports a cursor that this feed did not issue.
var ErrBadCursor = errors.New("malformed cursor")

// ErrCursorExpired reports a cursor older than the retained history: changes
// after it were pruned.
var ErrCursorExpired = errors.New("cursor expired")

// ErrBadContent reports message content that Postgres cannot store as text:
// invalid UTF-8 or a NUL character.
var ErrBadContent = errors.New("content must be UTF-8 text without NUL characters")

// ErrClosed is returned by Wait once the Store is closed.
var ErrClosed = errors.New("store closed")

// DefaultRetention is how long feed entries are kept when Options.Retention
// is zero.
const DefaultRetention = 7 * 24 * time.Hour

// DefaultFallbackInterval is how often the feed head is re-read without a
// wake-up when Options.FallbackInterval is zero. It is the safety net for
// changes nobody announced, such as those of a process that died between its
// commit and its notification.
const DefaultFallbackInterval = 250 * time.Millisecond

// Options configures a Store. The zero value is ready to use.
type Options struct {
	// Retention is the minimum age of the feed entries Prune deletes;
	// DefaultRetention when zero.
	Retention time.Duration
	// FallbackInterval is how often the feed head Wait compares with is
	// re-read without a wake-up; DefaultFallbackInterval when zero.
	FallbackInterval time.Duration
	// Logger receives the background listener's and refresher's errors;
	// discarded when nil.
	Logger *slog.Logger
}

// Chat is a chat of the simulated service.
type Chat struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"createdAt"`
	IsDeleted bool      `json:"isDeleted"`
	Version   int64     `json:"version"`
}

// Message is a message of a chat. UpdatedAt is the database server's time of
// its last write (creation, edit or deletion).
type Message struct {
	ID        string    `json:"id"`
	ChatID    string    `json:"chatId"`
	Content   string    `json:"content"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	IsDeleted bool      `json:"isDeleted"`
	Version   int64     `json:"version"`
}

// ChangeKind says what a Change did.
type ChangeKind string

// The kinds of changes in the feed.
const (
	KindChatCreated    ChangeKind = "chat.created"
	KindChatDeleted    ChangeKind = "chat.deleted"
	KindMessageCreated ChangeKind = "message.created"
	KindMessageUpdated ChangeKind = "message.updated"
	KindMessageDeleted ChangeKind = "message.deleted"
)

// Change is one entry of the change feed. Message is the message as it was
// right after the change, nil for chat changes. Version is the chat's or the
// message's version after the change: unique across the service and
// increasing along the feed for the changes of one chat and of one message.
type Change struct {
	Kind    ChangeKind `json:"kind"`
	ChatID  string     `json:"chatId"`
	Message *Message   `json:"message,omitempty"`
	Version int64      `json:"version"`
	At      time.Time  `json:"at"`
}

// Store keeps chats and messages in Postgres and serves their change feed.
// Its methods are safe for concurrent use. Close it before closing the pool.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	log  *slog.Logger

	wake      chan struct{} // buffered(1): asks the refresher to re-read the feed head
	notify    chan struct{} // buffered(1): asks the notifier to tell other processes
	refreshMu sync.Mutex    // serializes refresh
	feed      feedHead

	stop context.CancelFunc
	done sync.WaitGroup
}

// New returns a Store on pool, whose database Migrate has prepared, and starts
// its feed watcher: one goroutine that tracks the feed head, one that holds a
// LISTEN connection taken out of the pool, and one that notifies other
// processes of this Store's writes. Close stops them.
func New(pool *pgxpool.Pool, opts Options) *Store {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.FallbackInterval <= 0 {
		opts.FallbackInterval = DefaultFallbackInterval
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Store{
		pool:   pool,
		opts:   opts,
		log:    log,
		wake:   make(chan struct{}, 1),
		notify: make(chan struct{}, 1),
		stop:   stop,
	}
	s.feed.changed = make(chan struct{})
	s.done.Add(3)
	go func() { defer s.done.Done(); s.refreshLoop(ctx) }()
	go func() { defer s.done.Done(); s.listenLoop(ctx) }()
	go func() { defer s.done.Done(); s.notifyLoop(ctx) }()
	return s
}

// Close stops the feed watcher and wakes every Wait, which returns ErrClosed.
// It does not close the pool.
func (s *Store) Close() {
	s.stop()
	s.done.Wait()
	s.feed.close()
}

// parseID returns the canonical form of a UUID, or ErrNotFound: no chat or
// message has an ID that is not a UUID.
func parseID(kind, id string) (uuid.UUID, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return uuid.UUID{}, fmt.Errorf("%s ID is not a UUID: %w", kind, ErrNotFound) // arbitrary input: not logged
	}
	return u, nil
}

// checkContent rejects content that a text column cannot hold, before it can
// fail a write transaction.
func checkContent(content string) error {
	if !utf8.ValidString(content) || strings.ContainsRune(content, 0) {
		return ErrBadContent
	}
	return nil
}

// lockChatSQL takes a chat's write lock for the rest of the transaction. It
// must be the transaction's first statement: taking an advisory lock assigns
// no transaction ID, so the ID is assigned after the lock is held and the
// writers of one chat get increasing IDs in lock order. The bigint key space
// of advisory locks is this package's chat locks; Migrate uses the two-key
// space.
const lockChatSQL = `SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))`

// write runs the statements fill queues in one READ COMMITTED transaction,
// after taking chatID's write lock unless chatID is the zero UUID. The lock
// and the statements go in one pipeline, so the lock is held for one round
// trip and the commit. A callback of fill that returns an error (ErrNotFound)
// rolls the transaction back. Afterwards, committed or not, write wakes the
// feed refresher and the notifier.
//
// COMMIT is sent only after the statements' results arrived: if ctx ends
// while the write waits for its chat's lock, the connection is closed and
// the server rolls the transaction back instead of committing a write whose
// caller has gone.
func (s *Store) write(ctx context.Context, chatID uuid.UUID, fill func(*pgx.Batch)) error {
	defer s.written()
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		if chatID != (uuid.UUID{}) {
			b.Queue(lockChatSQL, chatID.String())
		}
		fill(b)
		return tx.SendBatch(ctx, b).Close()
	})
}

// ChatIDs returns the IDs of the chats that are not deleted, oldest first.
func (s *Store) ChatIDs(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::text FROM chats WHERE NOT is_deleted ORDER BY pos`)
	if err != nil {
		return nil, fmt.Errorf("list chats: %w", err)
	}
	ids, err := pgx.AppendRows([]string{}, rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list chats: %w", err)
	}
	return ids, nil
}

const createChatSQL = `
WITH c AS (
    INSERT INTO chats (id, created_at, version)
    SELECT $1, t.now, nextval('versions') FROM (SELECT clock_timestamp() AS now) t
    RETURNING id, created_at, version
), f AS (
    INSERT INTO changes (kind, chat_id, version, at)
    SELECT $2, id, version, created_at FROM c
)
SELECT id::text, created_at, version FROM c`

// CreateChat creates a chat and appends its chat.created change.
func (s *Store) CreateChat(ctx context.Context) (Chat, error) {
	id := uuid.New()
	c := Chat{}
	err := s.write(ctx, uuid.UUID{}, func(b *pgx.Batch) {
		b.Queue(createChatSQL, id, string(KindChatCreated)).QueryRow(func(row pgx.Row) error {
			return row.Scan(&c.ID, &c.CreatedAt, &c.Version)
		})
	})
	if err != nil {
		return Chat{}, fmt.Errorf("create chat: %w", err)
	}
	return c, nil
}

// deleteChatMessagesSQL soft-deletes the chat's messages that are not deleted
// yet, if the chat itself is not deleted, and appends a message.deleted change
// for each, in version order.
const deleteChatMessagesSQL = `
WITH m AS (
    UPDATE messages SET is_deleted = true, updated_at = clock_timestamp(), version = nextval('versions')
    WHERE chat_id = $1 AND NOT is_deleted
      AND EXISTS (SELECT 1 FROM chats WHERE id = $1 AND NOT is_deleted)
    RETURNING id, chat_id, content, created_at, updated_at, is_deleted, version
)
INSERT INTO changes (kind, chat_id, message_id, content, created_at, updated_at, is_deleted, version, at)
SELECT $2, chat_id, id, content, created_at, updated_at, is_deleted, version, updated_at
FROM m ORDER BY version`

const deleteChatSQL = `
WITH c AS (
    UPDATE chats SET is_deleted = true, version = nextval('versions')
    WHERE id = $1 AND NOT is_deleted
    RETURNING id, version, clock_timestamp() AS at
)
INSERT INTO changes (kind, chat_id, version, at)
SELECT $2, id, version, at FROM c`

// DeleteChat soft-deletes a chat and every message of it, in one transaction.
// It appends one message.deleted change for each message that was not deleted
// yet, then one chat.deleted change, all with higher versions than any earlier
// change of the chat. It returns ErrNotFound when the chat does not exist or
// is already deleted.
func (s *Store) DeleteChat(ctx context.Context, chatID string) error {
	id, err := parseID("chat", chatID)
	if err != nil {
		return fmt.Errorf("delete chat: %w", err)
	}
	err = s.write(ctx, id, func(b *pgx.Batch) {
		b.Queue(deleteChatMessagesSQL, id, string(KindMessageDeleted))
		b.Queue(deleteChatSQL, id, string(KindChatDeleted)).Exec(func(tag pgconn.CommandTag) error {
			if tag.RowsAffected() == 0 {
				return ErrNotFound
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("delete chat %s: %w", chatID, err)
	}
	return nil
}

// Chat returns a chat, deleted or not.
func (s *Store) Chat(ctx context.Context, chatID string) (Chat, error) {
	id, err := parseID("chat", chatID)
	if err != nil {
		return Chat{}, fmt.Errorf("get chat: %w", err)
	}
	var c Chat
	err = s.pool.QueryRow(ctx, `SELECT id::text, created_at, is_deleted, version FROM chats WHERE id = $1`, id).
		Scan(&c.ID, &c.CreatedAt, &c.IsDeleted, &c.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Chat{}, fmt.Errorf("get chat %s: %w", chatID, err)
	}
	return c, nil
}

// Messages returns every message of a chat, soft-deleted ones included,
// oldest first. It returns ErrNotFound when the chat does not exist; a deleted
// chat's messages are all deleted.
func (s *Store) Messages(ctx context.Context, chatID string) ([]Message, error) {
	id, err := parseID("chat", chatID)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	rows, err := s.pool.Query(ctx, `
        SELECT m.id::text, m.chat_id::text, m.content, m.created_at, m.updated_at, m.is_deleted, m.version
        FROM chats c LEFT JOIN messages m ON m.chat_id = c.id
        WHERE c.id = $1
        ORDER BY m.pos`, id)
	if err != nil {
		return nil, fmt.Errorf("list messages of chat %s: %w", chatID, err)
	}
	defer rows.Close()
	found := false
	msgs := []Message{}
	for rows.Next() {
		found = true
		var (
			mid, cid, content    *string
			createdAt, updatedAt *time.Time
			isDeleted            *bool
			version              *int64
		)
		if err := rows.Scan(&mid, &cid, &content, &createdAt, &updatedAt, &isDeleted, &version); err != nil {
			return nil, fmt.Errorf("list messages of chat %s: %w", chatID, err)
		}
		if mid == nil { // the chat without messages
			continue
		}
		msgs = append(msgs, Message{ID: *mid, ChatID: *cid, Content: *content, CreatedAt: *createdAt,
			UpdatedAt: *updatedAt, IsDeleted: *isDeleted, Version: *version})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list messages of chat %s: %w", chatID, err)
	}
	if !found {
		return nil, fmt.Errorf("list messages of chat %s: %w", chatID, ErrNotFound)
	}
	return msgs, nil
}

// messageColumns are the columns of a message, scanned by scanMessage.
const messageColumns = `id::text, chat_id::text, content, created_at, updated_at, is_deleted, version`

func scanMessage(row pgx.Row) (Message, error) {
	var m Message
	err := row.Scan(&m.ID, &m.ChatID, &m.Content, &m.CreatedAt, &m.UpdatedAt, &m.IsDeleted, &m.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	return m, err
}

const createMessageSQL = `
WITH m AS (
    INSERT INTO messages (id, chat_id, content, created_at, updated_at, version)
    SELECT $1, c.id, $3, t.now, t.now, nextval('versions')
    FROM chats c, (SELECT clock_timestamp() AS now) t
    WHERE c.id = $2 AND NOT c.is_deleted
    RETURNING id, chat_id, content, created_at, updated_at, is_deleted, version
), f AS (
    INSERT INTO changes (kind, chat_id, message_id, content, created_at, updated_at, is_deleted, version, at)
    SELECT $4, chat_id, id, content, created_at, updated_at, is_deleted, version, updated_at FROM m
)
SELECT ` + messageColumns + ` FROM m`

// CreateMessage adds a message to a chat and appends its message.created
// change. It returns ErrNotFound when the chat does not exist or is deleted,
// ErrBadContent for content that is not text.
func (s *Store) CreateMessage(ctx context.Context, chatID, content string) (Message, error) {
	cid, err := parseID("chat", chatID)
	if err != nil {
		return Message{}, fmt.Errorf("create message: %w", err)
	}
	if err := checkContent(content); err != nil {
		return Message{}, fmt.Errorf("create message in chat %s: %w", chatID, err)
	}
	id := uuid.New()
	var m Message
	err = s.write(ctx, cid, func(b *pgx.Batch) {
		b.Queue(createMessageSQL, id, cid, content, string(KindMessageCreated)).QueryRow(func(row pgx.Row) error {
			var err error
			m, err = scanMessage(row)
			return err
		})
	})
	if err != nil {
		return Message{}, fmt.Errorf("create message in chat %s: %w", chatID, err)
	}
	return m, nil
}

// changeMessageSQL edits ($3 not null) or soft-deletes ($4) a message that is
// not deleted. A message that is not deleted belongs to a chat that is not
// deleted: DeleteChat deletes the messages with the chat, under the same lock.
const changeMessageSQL = `
WITH m AS (
    UPDATE messages
    SET content = coalesce($3::text, content), is_deleted = $4::boolean,
        updated_at = clock_timestamp(), version = nextval('versions')
    WHERE id = $2 AND chat_id = $1 AND NOT is_deleted
    RETURNING id, chat_id, content, created_at, updated_at, is_deleted, version
), f AS (
    INSERT INTO changes (kind, chat_id, message_id, content, created_at, updated_at, is_deleted, version, at)
    SELECT $5, chat_id, id, content, created_at, updated_at, is_deleted, version, updated_at FROM m
)
SELECT ` + messageColumns + ` FROM m`

// changeMessage edits (content not nil) or deletes a message.
func (s *Store) changeMessage(ctx context.Context, chatID, messageID string, content *string) (Message, error) {
	cid, err := parseID("chat", chatID)
	if err != nil {
		return Message{}, err
	}
	mid, err := parseID("message", messageID)
	if err != nil {
		return Message{}, err
	}
	if content != nil {
		if err := checkContent(*content); err != nil {
			return Message{}, err
		}
	}
	kind, deleted := KindMessageUpdated, false
	if content == nil {
		kind, deleted = KindMessageDeleted, true
	}
	var m Message
	err = s.write(ctx, cid, func(b *pgx.Batch) {
		b.Queue(changeMessageSQL, cid, mid, content, deleted, string(kind)).QueryRow(func(row pgx.Row) error {
			var err error
			m, err = scanMessage(row)
			return err
		})
	})
	return m, err
}

// UpdateMessage replaces a message's content and appends its message.updated
// change. It returns ErrNotFound when the chat/message pair does not exist or
// the message (or its chat) is deleted, ErrBadContent for content that is not
// text.
func (s *Store) UpdateMessage(ctx context.Context, chatID, messageID, content string) (Message, error) {
	m, err := s.changeMessage(ctx, chatID, messageID, &content)
	if err != nil {
		return Message{}, fmt.Errorf("update message %s in chat %s: %w", messageID, chatID, err)
	}
	return m, nil
}

// DeleteMessage soft-deletes a message (its content is kept) and appends its
// message.deleted change. It returns ErrNotFound when the chat/message pair
// does not exist or the message is already deleted.
func (s *Store) DeleteMessage(ctx context.Context, chatID, messageID string) (Message, error) {
	m, err := s.changeMessage(ctx, chatID, messageID, nil)
	if err != nil {
		return Message{}, fmt.Errorf("delete message %s in chat %s: %w", messageID, chatID, err)
	}
	return m, nil
}
