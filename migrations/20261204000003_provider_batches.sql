-- Analyses made through a provider's batch API (`--batch-api`): the batches
-- submitted, and each request waiting in one, so that a kill, a redeploy or
-- a rerun submits no image twice and picks up every batch in flight.

-- A batch as submitted. It is written ('submitting', with its requests
-- assigned) before the provider is asked, and given the provider's id once
-- the provider answers: a submission whose answer was lost is found again
-- among the provider's batches, not sent twice.
CREATE TABLE provider_batches (
    id                uuid PRIMARY KEY,
    stage             text NOT NULL CHECK (stage IN ('analysis')),
    provider          text NOT NULL,
    model             text NOT NULL,
    provider_batch_id text UNIQUE,
    status            text NOT NULL CHECK (status IN ('submitting', 'in_progress', 'ended', 'ingested')),
    requests          integer NOT NULL CHECK (requests >= 0),
    -- From its results, as they are ingested.
    succeeded         integer NOT NULL DEFAULT 0,
    failed            integer NOT NULL DEFAULT 0,
    resubmitted       integer NOT NULL DEFAULT 0,
    submitted_at      timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz,
    ended_at          timestamptz,
    ingested_at       timestamptz,
    polled_at         timestamptz
);
CREATE INDEX provider_batches_open ON provider_batches (submitted_at) WHERE status <> 'ingested';

-- A request waiting for its analysis: queued (no batch yet) or in a batch.
-- Its id is the request's custom_id; the event is what the pipeline goes on
-- with once the result is stored. Deleted when its analysis is stored, when
-- its failure is recorded, and with its item.
CREATE TABLE batch_requests (
    id          uuid PRIMARY KEY,
    item_id     uuid NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    user_id     text NOT NULL,
    request_key text NOT NULL,
    event       jsonb NOT NULL,
    batch_id    uuid REFERENCES provider_batches (id) ON DELETE SET NULL,
    -- Submissions so far; a request the provider did not answer is submitted once more.
    submissions integer NOT NULL DEFAULT 0,
    -- Why it was submitted again, when it was.
    last_error  text,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (item_id, request_key)
);
CREATE INDEX batch_requests_batch ON batch_requests (batch_id);
CREATE INDEX batch_requests_queued ON batch_requests (queued_at) WHERE batch_id IS NULL;

-- Which batch made an analysis: its tokens are priced at the batch price.
ALTER TABLE analyses ADD COLUMN batch_id uuid;
