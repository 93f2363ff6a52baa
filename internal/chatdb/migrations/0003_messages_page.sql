-- A chat's messages in display order, (created_at, id) with the IDs in
-- byte order whatever the database's collation, for the internal app's
-- paged loads (MessagesPage): the newest page, or the page before a cursor,
-- is one index range read backwards, so a 100,000-message chat opens as fast
-- as a 10-message one. The app merges a page with its cache and sorts IDs in
-- Go's byte order: under a collation such as en_US the database's order of
-- two messages created in the same microsecond could differ from it, and a
-- cursor would then skip or repeat one. It also serves a chat's soft delete
-- (by chat_id), which messages_chat served; that index is dropped.
CREATE INDEX messages_chat_page ON messages (chat_id, created_at, id COLLATE "C");
DROP INDEX messages_chat;
