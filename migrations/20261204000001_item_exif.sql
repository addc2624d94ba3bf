-- The camera and capture date the thumbnailer read from an original's
-- EXIF, kept on its item: the analyzer puts them in the prompt from here,
-- not from the event, which anyone who can write to the stream could forge.
ALTER TABLE items ADD COLUMN camera text, ADD COLUMN taken_at text;
