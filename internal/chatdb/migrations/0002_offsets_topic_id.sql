-- The Kafka topic ID (a UUID the broker gives a topic when it is created)
-- of the topic an offset was read from. A topic deleted and created again
-- under the same name gets a new ID and starts its offsets at 0 again: the
-- stored offset then means nothing there, and the writer stops that
-- partition instead of skipping or re-reading at random. NULL: stored before
-- IDs were kept (the next advance records it).
ALTER TABLE consumer_offsets ADD COLUMN topic_id text;
