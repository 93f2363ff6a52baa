-- The internal system's copy of the synced chats and messages, and the Kafka
-- offsets of the writer that keeps it.
--
-- Every row holds the version of the last change applied to it; a change is
-- applied only if its version is newer (last writer wins), so duplicates,
-- replays, mirrored copies and any arrival order have no visible effect.

-- version is the version of the last chat event applied ("new" or "delete").
CREATE TABLE chats (
    id            text PRIMARY KEY,
    is_deleted    boolean NOT NULL,
    version       bigint NOT NULL,
    replicated_at timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to chats: chats and messages come from two topics, so a
-- message may arrive before its chat (the original dropped such messages on a
-- foreign-key error). A message whose chat row says deleted is stored deleted.
CREATE TABLE messages (
    id            text PRIMARY KEY,
    chat_id       text NOT NULL,
    content       text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    is_deleted    boolean NOT NULL,
    version       bigint NOT NULL,
    replicated_at timestamptz NOT NULL DEFAULT now()
);
-- Serves both a chat's soft delete (by chat_id) and the ordered read of its
-- messages (by chat_id, created_at, id).
CREATE INDEX messages_chat ON messages (chat_id, created_at, id);

-- The next Kafka offset to read per consumer group and partition, written in
-- the same transaction as the rows it covers: a Postgres failover that loses
-- the last commits loses their offsets with them, and the writer reads those
-- records again.
CREATE TABLE consumer_offsets (
    group_id    text,
    topic       text,
    partition   int,
    next_offset bigint NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);
