-- The simulated chat service's data and its change feed.
-- See the package documentation (doc.go) for why the feed looks like this.

-- versions numbers every write: each change gets the next value, taken while
-- the writer holds its chat's write lock, so versions order the changes of one
-- chat (and of each of its messages) in commit order.
CREATE SEQUENCE versions AS bigint;

CREATE TABLE chats (
    id         uuid PRIMARY KEY,
    pos        bigint GENERATED ALWAYS AS IDENTITY UNIQUE, -- creation order
    created_at timestamptz NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false,
    version    bigint NOT NULL
);

CREATE TABLE messages (
    id         uuid PRIMARY KEY,
    chat_id    uuid NOT NULL REFERENCES chats (id),
    pos        bigint GENERATED ALWAYS AS IDENTITY, -- creation order
    content    text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false,
    version    bigint NOT NULL
);
CREATE INDEX messages_chat_pos ON messages (chat_id, pos);

-- changes is the feed. A row is identified and ordered by (xid, seq): xid is
-- the writing transaction's ID, seq orders the rows of one transaction. Message
-- changes carry the message as it was right after the change.
CREATE TABLE changes (
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    kind       text NOT NULL CHECK (kind IN ('chat.created', 'chat.deleted',
                   'message.created', 'message.updated', 'message.deleted')),
    chat_id    uuid NOT NULL,
    message_id uuid,
    content    text,
    created_at timestamptz,
    updated_at timestamptz,
    is_deleted boolean,
    version    bigint NOT NULL,
    at         timestamptz NOT NULL,
    PRIMARY KEY (xid, seq),
    CHECK ((kind LIKE 'message.%') = (message_id IS NOT NULL
        AND content IS NOT NULL AND created_at IS NOT NULL
        AND updated_at IS NOT NULL AND is_deleted IS NOT NULL))
);

-- feed_state holds the feed position of the newest row Prune deleted: a cursor
-- before it has lost rows and is expired.
CREATE TABLE feed_state (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    pruned_xid xid8 NOT NULL,
    pruned_seq bigint NOT NULL
);
INSERT INTO feed_state (pruned_xid, pruned_seq) VALUES ('0', 0);
