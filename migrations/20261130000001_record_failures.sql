-- Failures that have no item row of their own to sit on: a record that
-- could not be read, an event naming another user's item, a row the
-- database refused. `collections failures` lists them beside failed
-- items; `collections retry` sends `input` to its stage again.
CREATE TABLE record_failures (
    id          uuid PRIMARY KEY,
    stage       text NOT NULL CHECK (stage IN ('thumbnail', 'analysis', 'embedding')),
    user_id     text,
    item_id     uuid,
    object_key  text,
    reason      text NOT NULL,
    input       jsonb,                    -- the stage input, to run it again, when it could be read
    raw         text,                     -- the record as received (cut short), when it could not
    source      text NOT NULL,            -- a Kinesis sequence number, or the key of a local run
    fingerprint text NOT NULL UNIQUE,     -- the same record failing again is one row
    attempts    integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX record_failures_user ON record_failures (user_id, updated_at);
