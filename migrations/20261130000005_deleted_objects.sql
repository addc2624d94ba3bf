-- Deletion. S3 "Object Deleted" removes an item (its analyses and vectors go
-- with it: ON DELETE CASCADE) and its thumbnail, and leaves a tombstone here
-- with the delete's S3 sequencer: a late "Object Created" of an older
-- version of the same key (a smaller sequencer), or one whose thumbnail was
-- still being made when the delete came, does not bring the item back.
-- Sequencers are stored right-padded with zeros to 64 characters, so that
-- comparing them as text is S3's order.
CREATE TABLE deleted_objects (
    key        text PRIMARY KEY,
    sequencer  text,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

-- The sequencer of the version an item was made from: a delete older than
-- it (a late event of an earlier version) leaves the item alone, and an
-- older "Object Created" does not overwrite it.
ALTER TABLE items ADD COLUMN source_sequencer text;
