-- Identical bytes, analysed once. The thumbnailer records the SHA-256 of each
-- original it reads; an item whose bytes equal an earlier item's of the same
-- user (never across users) points at it (duplicate_of) and gets no analysis
-- or vector of its own: its analysis and embedding statuses follow that
-- item's, and search shows that item once, with the duplicates' keys.
ALTER TABLE items
    ADD COLUMN content_sha256 text,
    ADD COLUMN duplicate_of   uuid REFERENCES items (id) ON DELETE SET NULL;
CREATE INDEX items_user_content ON items (user_id, content_sha256) WHERE content_sha256 IS NOT NULL;
CREATE INDEX items_duplicate_of ON items (duplicate_of) WHERE duplicate_of IS NOT NULL;
