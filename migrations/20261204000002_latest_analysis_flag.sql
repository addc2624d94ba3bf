-- Each item's latest analysis (its highest version) carries is_latest, kept
-- by a trigger on every insert, delete or change of version, so searches
-- filter on a flag instead of asking, per matching row, whether a later
-- version exists; and full text gets a GIN index over the latest analyses only.
ALTER TABLE analyses ADD COLUMN is_latest boolean NOT NULL DEFAULT false;

UPDATE analyses a SET is_latest = true
WHERE NOT EXISTS (SELECT 1 FROM analyses b WHERE b.item_id = a.item_id AND b.version > a.version);

CREATE FUNCTION analyses_mark_latest() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    item uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.item_id ELSE NEW.item_id END;
BEGIN
    -- One writer per item at a time: the next statement's snapshot then
    -- sees every version committed before it.
    PERFORM 1 FROM items WHERE id = item FOR UPDATE;
    UPDATE analyses a SET is_latest = l.latest
    FROM (SELECT id, version = max(version) OVER () AS latest FROM analyses WHERE item_id = item) l
    WHERE a.id = l.id AND a.is_latest IS DISTINCT FROM l.latest;
    RETURN NULL;
END
$$;

CREATE TRIGGER analyses_latest
    AFTER INSERT OR DELETE OR UPDATE OF version, item_id ON analyses
    FOR EACH ROW EXECUTE FUNCTION analyses_mark_latest();

CREATE INDEX analyses_latest_search ON analyses USING gin (user_id, search_vector) WHERE is_latest;
DROP INDEX analyses_user_search;
