-- What a search reads, kept beside each item's latest analysis by triggers,
-- so a search reads no row it does not need (measured in benches/README.md):
--
-- * `embeddings.is_latest`: a vector is the latest if its analysis is.
--   The nearest vectors are filtered on their own row, with no join to
--   analyses per candidate.
-- * `search_documents`: the full-text document (category and tsvector) of
--   each item's latest analysis, one narrow row per item, hash-partitioned
--   by user as `embeddings` is, with a (user_id, search_vector) GIN per
--   partition. It replaces the partial GIN on analyses: a user's matches
--   are read from a few pages of their partition instead of one page of
--   the wide analyses table each.

-- Existing vectors take the default without a rewrite (a constant default
-- is stored once in the catalog); only those of superseded analyses are
-- written, so the graphs are not rebuilt.
ALTER TABLE embeddings ADD COLUMN is_latest boolean NOT NULL DEFAULT true;

UPDATE embeddings e SET is_latest = false
FROM analyses a WHERE a.id = e.analysis_id AND NOT a.is_latest;

CREATE TABLE search_documents (
    user_id       text NOT NULL,
    item_id       uuid NOT NULL REFERENCES items (id) ON UPDATE CASCADE ON DELETE CASCADE,
    analysis_id   uuid NOT NULL REFERENCES analyses (id) ON UPDATE CASCADE ON DELETE CASCADE,
    category      text NOT NULL,
    search_vector tsvector NOT NULL,
    CONSTRAINT search_documents_pkey PRIMARY KEY (user_id, item_id)
) PARTITION BY HASH (user_id);

DO $$
BEGIN
    FOR i IN 0..31 LOOP
        EXECUTE format('CREATE TABLE search_documents_p%s PARTITION OF search_documents '
                       'FOR VALUES WITH (MODULUS 32, REMAINDER %s)', lpad(i::text, 2, '0'), i);
    END LOOP;
END $$;

INSERT INTO search_documents (user_id, item_id, analysis_id, category, search_vector)
SELECT user_id, item_id, id, category, search_vector FROM analyses WHERE is_latest;

CREATE INDEX search_documents_search ON search_documents USING gin (user_id, search_vector);
CREATE INDEX search_documents_analysis_id ON search_documents (analysis_id);
DROP INDEX analyses_latest_search;
ANALYZE search_documents;

-- A vector is written with its analysis's flag. The item's row is locked
-- first, as the foreign key's check locks it (FOR KEY SHARE: other writes
-- of the item's columns are not held up), so a new version of the
-- analysis, which locks it for update, is either committed and seen here,
-- or waits and then flips this row too.
CREATE FUNCTION embeddings_latest_before() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM items WHERE id = NEW.item_id FOR KEY SHARE;
    NEW.is_latest := coalesce((SELECT is_latest FROM analyses WHERE id = NEW.analysis_id), false);
    RETURN NEW;
END
$$;

CREATE TRIGGER embeddings_latest_before
    BEFORE INSERT OR UPDATE OF analysis_id, item_id ON embeddings
    FOR EACH ROW EXECUTE FUNCTION embeddings_latest_before();

-- The analyses' trigger of migration 20261204000002, now also carrying the
-- flags to the item's vectors and its latest analysis to its document; it
-- also runs when an analysis's searchable content changes.
CREATE OR REPLACE FUNCTION analyses_latest_after() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    item uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.item_id ELSE NEW.item_id END;
    owner text := CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END;
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM 1 FROM items WHERE id = item FOR UPDATE;
    END IF;
    UPDATE analyses a SET is_latest = l.latest
    FROM (SELECT id, version = max(version) OVER () AS latest FROM analyses WHERE item_id = item) l
    WHERE a.id = l.id AND a.is_latest IS DISTINCT FROM l.latest;
    UPDATE embeddings e SET is_latest = a.is_latest
    FROM analyses a
    WHERE e.user_id = owner AND e.item_id = item AND a.id = e.analysis_id
      AND e.is_latest IS DISTINCT FROM a.is_latest;
    INSERT INTO search_documents AS d (user_id, item_id, analysis_id, category, search_vector)
    SELECT user_id, item_id, id, category, search_vector FROM analyses WHERE item_id = item AND is_latest
    ON CONFLICT (user_id, item_id) DO UPDATE
        SET analysis_id = EXCLUDED.analysis_id, category = EXCLUDED.category, search_vector = EXCLUDED.search_vector
        WHERE (d.analysis_id, d.category, d.search_vector)
              IS DISTINCT FROM (EXCLUDED.analysis_id, EXCLUDED.category, EXCLUDED.search_vector);
    DELETE FROM search_documents d
    WHERE d.user_id = owner AND d.item_id = item
      AND NOT EXISTS (SELECT 1 FROM analyses a WHERE a.item_id = item AND a.is_latest);
    RETURN NULL;
END
$$;

DROP TRIGGER analyses_latest_after ON analyses;
CREATE TRIGGER analyses_latest_after
    AFTER INSERT OR DELETE OR UPDATE OF version, item_id, category, summary, analysis ON analyses
    FOR EACH ROW EXECUTE FUNCTION analyses_latest_after();
