-- Tokens the providers counted, in columns (shared::usage): on each
-- analysis, its reply's usage ("input" is input billed at the full price;
-- cache reads and writes apart); on each embedding, its share of its
-- request's tokens (split by document length). NULL: the provider counted
-- none (the local ones), or the row predates this migration and its reply
-- said nothing.
ALTER TABLE analyses
    ADD COLUMN input_tokens       bigint CHECK (input_tokens >= 0),
    ADD COLUMN output_tokens      bigint CHECK (output_tokens >= 0),
    ADD COLUMN cache_read_tokens  bigint CHECK (cache_read_tokens >= 0),
    ADD COLUMN cache_write_tokens bigint CHECK (cache_write_tokens >= 0);
ALTER TABLE embeddings ADD COLUMN tokens bigint CHECK (tokens >= 0);

-- Analyses stored before: their usage is in raw_response, in the provider's terms.
UPDATE analyses SET
    input_tokens       = (raw_response #>> '{usage,input_tokens}')::bigint,
    output_tokens      = coalesce((raw_response #>> '{usage,output_tokens}')::bigint, 0),
    cache_read_tokens  = coalesce((raw_response #>> '{usage,cache_read_input_tokens}')::bigint, 0),
    cache_write_tokens = coalesce((raw_response #>> '{usage,cache_creation_input_tokens}')::bigint, 0)
WHERE jsonb_typeof(raw_response #> '{usage,input_tokens}') = 'number';
UPDATE analyses SET
    input_tokens       = (raw_response #>> '{usage,prompt_tokens}')::bigint
                         - coalesce((raw_response #>> '{usage,prompt_tokens_details,cached_tokens}')::bigint, 0),
    output_tokens      = coalesce((raw_response #>> '{usage,completion_tokens}')::bigint, 0),
    cache_read_tokens  = coalesce((raw_response #>> '{usage,prompt_tokens_details,cached_tokens}')::bigint, 0),
    cache_write_tokens = 0
WHERE jsonb_typeof(raw_response #> '{usage,prompt_tokens}') = 'number';

CREATE INDEX analyses_created_at ON analyses (created_at);
