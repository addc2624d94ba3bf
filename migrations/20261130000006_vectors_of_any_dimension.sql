-- Vectors of any dimension, one HNSW index per embedding model, and
-- embeddings partitioned by user.
--
-- * `embedding_models` registers each model with its dimensions; every
--   vector references its model's row, so one model cannot store vectors of
--   two sizes, and a vector's length must be its row's dimensions.
-- * `embeddings.vector` is an untyped `vector`. Each model gets a partial
--   HNSW index on a cast to a `halfvec` of its own size
--   (`vector::halfvec(1024)`; none above pgvector's 4 000-dimension limit),
--   built by the application (`shared::db::models::build_index`) and
--   dropped with the model's vectors.
-- * The table is hash-partitioned by user into 32 partitions, each with its
--   own graph: a user's rows are a 32 times larger share of the graph the
--   search walks (measured in benches/README.md).
-- * Full text gets a (user_id, search_vector) GIN index (btree_gin).
--
-- The vectors move to the new table as they are; nothing is re-embedded.

CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE embedding_models (
    -- Model names go into index predicates; a plain alphabet keeps them literal.
    model      text PRIMARY KEY CHECK (model ~ '^[A-Za-z0-9._:/@+-]{1,200}$'),
    dimensions integer NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT embedding_models_model_dimensions UNIQUE (model, dimensions)
);

INSERT INTO embedding_models (model, dimensions)
SELECT embedding_model, min(embedding_dimensions) FROM embeddings GROUP BY embedding_model;

ALTER TABLE embeddings RENAME TO embeddings_before_0006;
ALTER TABLE embeddings_before_0006 RENAME CONSTRAINT embeddings_pkey TO embeddings_before_0006_pkey;
ALTER TABLE embeddings_before_0006 RENAME CONSTRAINT embeddings_analysis_model TO embeddings_before_0006_analysis_model;
-- (`vector-index drop` may have left the HNSW index out.)
DROP INDEX IF EXISTS embeddings_item_id, embeddings_user_model, embeddings_vector_hnsw;

CREATE TABLE embeddings (
    id                   uuid NOT NULL,
    item_id              uuid NOT NULL REFERENCES items (id) ON UPDATE CASCADE ON DELETE CASCADE,
    analysis_id          uuid NOT NULL REFERENCES analyses (id) ON UPDATE CASCADE ON DELETE CASCADE,
    user_id              text NOT NULL,
    vector               vector NOT NULL,
    embedding_model      text NOT NULL,
    embedding_dimensions integer NOT NULL,
    embedding_source     jsonb NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    tokens               bigint CHECK (tokens >= 0),
    -- A partitioned table's unique keys include its partition key.
    CONSTRAINT embeddings_pkey PRIMARY KEY (user_id, id),
    CONSTRAINT embeddings_analysis_model UNIQUE (user_id, analysis_id, embedding_model),
    CONSTRAINT embeddings_model FOREIGN KEY (embedding_model, embedding_dimensions)
        REFERENCES embedding_models (model, dimensions),
    CONSTRAINT embeddings_vector_dimensions CHECK (vector_dims(vector) = embedding_dimensions)
) PARTITION BY HASH (user_id);

DO $$
BEGIN
    FOR i IN 0..31 LOOP
        EXECUTE format('CREATE TABLE embeddings_p%s PARTITION OF embeddings FOR VALUES WITH (MODULUS 32, REMAINDER %s)',
                       lpad(i::text, 2, '0'), i);
    END LOOP;
END $$;

INSERT INTO embeddings (id, item_id, analysis_id, user_id, vector, embedding_model, embedding_dimensions,
                        embedding_source, created_at, tokens)
SELECT id, item_id, analysis_id, user_id, vector, embedding_model, embedding_dimensions,
       embedding_source, created_at, tokens
FROM embeddings_before_0006;

DROP TABLE embeddings_before_0006;

CREATE INDEX embeddings_user_model ON embeddings (user_id, embedding_model);
CREATE INDEX embeddings_item_id ON embeddings (item_id);
CREATE INDEX embeddings_analysis_id ON embeddings (analysis_id);

CREATE INDEX analyses_user_search ON analyses USING gin (user_id, search_vector);
DROP INDEX analyses_search_vector;

ANALYZE embeddings;
