-- The seed's three tables, plus what the pipeline needs to be re-runnable:
-- per-stage status and last error on items, idempotency keys that make a
-- replayed event a no-op, and an HNSW index for cosine search.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE items (
    id               uuid PRIMARY KEY,
    user_id          text NOT NULL,
    filename         text NOT NULL,           -- the key without its user prefix, e.g. trips/beach.jpg
    file_path        text NOT NULL,           -- the S3 key of the original
    bucket           text NOT NULL,
    mime_type        text,
    source_etag      text,                    -- version tag of the original that was processed
    size_bytes       bigint,
    width            integer,                 -- of the original, after EXIF orientation
    height           integer,
    thumbnail_key    text,
    thumbnail_status text NOT NULL DEFAULT 'pending',
    analysis_status  text NOT NULL DEFAULT 'pending',
    embedding_status text NOT NULL DEFAULT 'pending',
    failed_stage     text,                    -- the stage of last_error, NULL when nothing failed
    last_error       text,
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT items_status_values CHECK (
        thumbnail_status IN ('pending', 'done', 'failed')
        AND analysis_status IN ('pending', 'done', 'failed')
        AND embedding_status IN ('pending', 'done', 'failed')
    ),
    CONSTRAINT items_failed_stage_values CHECK (failed_stage IN ('thumbnail', 'analysis', 'embedding'))
);
CREATE INDEX items_user_id ON items (user_id);
CREATE INDEX items_failed ON items (user_id, failed_stage) WHERE failed_stage IS NOT NULL;
CREATE INDEX items_bucket_key ON items (bucket, file_path);

CREATE TABLE analyses (
    id            uuid PRIMARY KEY,
    item_id       uuid NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    user_id       text NOT NULL,
    version       integer NOT NULL CHECK (version > 0),
    category      text NOT NULL,
    summary       text NOT NULL,
    analysis      jsonb NOT NULL,             -- the validated analysis (documented schema)
    raw_response  jsonb NOT NULL,             -- the provider's reply, as received
    provider_used text NOT NULL,
    model_used    text NOT NULL,
    trace_id      text,
    request_key   text NOT NULL,              -- idempotency: same image + model + request => same row
    search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, category || ' ' || summary), 'A')
        || setweight(jsonb_to_tsvector('english'::regconfig, coalesce(analysis -> 'tags', '[]'::jsonb), '["string"]'), 'A')
        || setweight(jsonb_to_tsvector('english'::regconfig, analysis, '["string"]'), 'B')
    ) STORED,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT analyses_item_version UNIQUE (item_id, version),
    CONSTRAINT analyses_item_request UNIQUE (item_id, request_key)
);
CREATE INDEX analyses_user_id ON analyses (user_id);
CREATE INDEX analyses_search_vector ON analyses USING gin (search_vector);

CREATE TABLE embeddings (
    id                   uuid PRIMARY KEY,
    item_id              uuid NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    analysis_id          uuid NOT NULL REFERENCES analyses (id) ON DELETE CASCADE,
    user_id              text NOT NULL,
    vector               vector(1024) NOT NULL,
    embedding_model      text NOT NULL,
    embedding_dimensions integer NOT NULL CHECK (embedding_dimensions > 0),
    embedding_source     jsonb NOT NULL,     -- which analysis fields made the document
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT embeddings_analysis_model UNIQUE (analysis_id, embedding_model)
);
CREATE INDEX embeddings_user_model ON embeddings (user_id, embedding_model);
CREATE INDEX embeddings_item_id ON embeddings (item_id);
CREATE INDEX embeddings_vector_hnsw ON embeddings USING hnsw (vector vector_cosine_ops);
