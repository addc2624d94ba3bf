-- Item ids become a hash of the whole key (events::item_uuid). The first
-- rule named an item by its user and its key without the extension, so
-- `u/a.jpg` and `u/a.png` were one row, and a name that was a UUID was that
-- item's id whatever the user. Every row made under the first rule moves to
-- its new id here; its analyses and embeddings follow (ON UPDATE CASCADE).
-- An item that held two keys (a.jpg, then a.png) keeps the key it was
-- written with last; the other key becomes its own item when a backfill
-- finds it. record_failures keep the id they were written with: `collections
-- retry` reads their input again, which names the key.

-- The id of the item a key makes: UUIDv8 of SHA-256('collections/item/' || key),
-- version and variant bits set as RFC 9562 says (uuid::Builder::from_custom_bytes).
CREATE FUNCTION collections_item_id(key text) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT (substr(h, 1, 12) || '8' || substr(h, 14, 3)
            || to_hex((('x' || substr(h, 17, 1))::bit(4)::integer & 3) | 8)
            || substr(h, 18, 15))::uuid
    FROM (SELECT encode(sha256(convert_to('collections/item/' || key, 'UTF8')), 'hex') AS h) AS digest
$$;

ALTER TABLE analyses
    DROP CONSTRAINT analyses_item_id_fkey,
    ADD CONSTRAINT analyses_item_id_fkey
        FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE embeddings
    DROP CONSTRAINT embeddings_item_id_fkey,
    ADD CONSTRAINT embeddings_item_id_fkey
        FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE ON UPDATE CASCADE;

UPDATE items SET id = collections_item_id(file_path) WHERE id <> collections_item_id(file_path);
