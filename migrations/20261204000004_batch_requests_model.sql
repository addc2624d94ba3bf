-- Each waiting request names the provider and model it is for: a run
-- submits and follows only its own model's requests and batches, so a
-- change of model between runs never sends one model's request as another's.
ALTER TABLE batch_requests ADD COLUMN provider text, ADD COLUMN model text;
-- The request key is `{digest}:{provider}:{model}[:reanalyze-{uuid}]` (a
-- model's name may hold colons: `llava:13b`).
UPDATE batch_requests SET
    provider = split_part(request_key, ':', 2),
    model = regexp_replace(
        substr(request_key, length(split_part(request_key, ':', 1)) + length(split_part(request_key, ':', 2)) + 3),
        ':reanalyze-[0-9a-f-]+$', '');
ALTER TABLE batch_requests ALTER COLUMN provider SET NOT NULL, ALTER COLUMN model SET NOT NULL;
DROP INDEX batch_requests_queued;
CREATE INDEX batch_requests_queued ON batch_requests (provider, model, queued_at) WHERE batch_id IS NULL;
CREATE INDEX provider_batches_model ON provider_batches (provider, model) WHERE status <> 'ingested';
