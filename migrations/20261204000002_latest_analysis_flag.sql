-- Each item's latest analysis (its highest version) carries is_latest, kept
-- by triggers on every insert, delete or change of version, so searches
-- filter on a flag instead of asking, per matching row, whether a later
-- version exists; and full text gets a GIN index over the latest analyses only.
ALTER TABLE analyses ADD COLUMN is_latest boolean NOT NULL DEFAULT false;

UPDATE analyses a SET is_latest = true
WHERE NOT EXISTS (SELECT 1 FROM analyses b WHERE b.item_id = a.item_id AND b.version > a.version);

-- A row is written with its flag already right (no second write of it):
-- latest unless a higher version of its item exists. The item's row is
-- locked first, so writers of one item take turns and the next statement
-- sees every version committed before.
CREATE FUNCTION analyses_latest_before() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM items WHERE id = NEW.item_id FOR UPDATE;
    NEW.is_latest := NOT EXISTS (
        SELECT 1 FROM analyses WHERE item_id = NEW.item_id AND version > NEW.version AND id <> NEW.id);
    RETURN NEW;
END
$$;

-- Then the item's other versions follow: the one that was latest no longer
-- is; after a delete, the highest left is.
CREATE FUNCTION analyses_latest_after() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    item uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.item_id ELSE NEW.item_id END;
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM 1 FROM items WHERE id = item FOR UPDATE;
    END IF;
    UPDATE analyses a SET is_latest = l.latest
    FROM (SELECT id, version = max(version) OVER () AS latest FROM analyses WHERE item_id = item) l
    WHERE a.id = l.id AND a.is_latest IS DISTINCT FROM l.latest;
    RETURN NULL;
END
$$;

CREATE TRIGGER analyses_latest_before
    BEFORE INSERT OR UPDATE OF version, item_id ON analyses
    FOR EACH ROW EXECUTE FUNCTION analyses_latest_before();
CREATE TRIGGER analyses_latest_after
    AFTER INSERT OR DELETE OR UPDATE OF version, item_id ON analyses
    FOR EACH ROW EXECUTE FUNCTION analyses_latest_after();

CREATE INDEX analyses_latest_search ON analyses USING gin (user_id, search_vector) WHERE is_latest;
DROP INDEX analyses_user_search;
